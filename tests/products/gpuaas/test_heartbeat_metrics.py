"""Metrics on the heartbeat, at the store (both databases): the samples are recorded for the
store's node in the heartbeat's transaction, and a report that fails in the database itself
rolls back alone: the node is refreshed and the leases renewed all the same."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.orm import Session

from aicloud.platform import metrics
from aicloud.products import gpuaas
from aicloud.products.gpuaas import node_store
from aicloud.products.gpuaas.models import NodeModel
from aicloud.shared.db import Database
from tests.products.gpuaas.world import ADMIN, World, h100s, make_world

TTL = timedelta(seconds=30)


def _running(w: World, name: str) -> str:
    inst = w.launch(name)
    w.schedule()
    with w.db.transaction() as s:
        m = gpuaas.get_instance_model(s, inst.id, for_update=True)
        for state in (gpuaas.InstanceState.PROVISIONING, gpuaas.InstanceState.RUNNING):
            gpuaas.switch_instance_status(s, m, state, reason="t", actor=ADMIN,
                                          at=w.clock.now())
        m.started_at = m.last_metered_at = w.clock.now()
    return inst.id


def _sample(w: World, resource_id: str) -> dict[str, Any]:
    return {"resource_id": resource_id, "at": w.clock.now().isoformat(), "cpu_cores": 1.0,
            "memory_bytes": 2**30,
            "gpus": [{"index": 0, "uuid": None, "source": "simulated", "utilization_pct": 80.0,
                      "memory_used_bytes": 2**33, "memory_total_bytes": 80 * 2**30,
                      "power_watts": 500.0, "temperature_c": 60.0}]}


def _report() -> gpuaas.NodeReport:
    return gpuaas.NodeReport(name="n1", inventory_source="static", simulated=True,
                             gpus=h100s(1))


def test_samples_recorded_and_a_failing_report_never_fails_the_heartbeat(
        db: Database, monkeypatch: pytest.MonkeyPatch) -> None:
    w = make_world(db)
    node_id = w.add_node("n1", gpus=1)
    inst_id = _running(w, "busy")
    store = gpuaas.DbNodeStore(db, clock=w.clock, node_id=node_id)
    [lease] = store.claim([inst_id], owner="agent", ttl=TTL)

    beat = store.heartbeat(_report(), [lease], ttl=TTL, now=w.clock.now(),
                           meter_before=w.clock.now(), samples=[_sample(w, inst_id)])
    assert (beat.metric_values, beat.metrics_dropped) == (6, 0), beat.metrics_problems
    with db.read_transaction() as s:
        got = metrics.series_of(s, "instance", inst_id, start=w.clock.now() - timedelta(
            minutes=5), end=w.clock.now() + timedelta(minutes=1), step=timedelta(minutes=1))
    assert {x.metric for x in got} >= {"cpu_cores", "gpu_utilization_pct"}

    # The recording fails in the database (on PostgreSQL that aborts the transaction up to
    # the savepoint): the report is dropped, the beat commits.
    def broken(session: Session, *args: object, **kwargs: object) -> metrics.RecordResult:
        session.execute(text("INSERT INTO no_such_table VALUES (1)"))
        raise AssertionError("unreachable")

    monkeypatch.setattr(node_store, "record_node_metrics", broken)
    w.clock.advance(10)
    renewed = store.heartbeat(_report(), list(beat.kept), ttl=TTL, now=w.clock.now(),
                              meter_before=w.clock.now(), samples=[_sample(w, inst_id)])
    assert [x.row_id for x in renewed.kept] == [inst_id]
    assert renewed.kept[0].expires_at > beat.kept[0].expires_at
    assert renewed.metric_values == 0 and renewed.metrics_dropped == 1
    with db.read_transaction() as s:
        assert s.get(NodeModel, node_id).last_heartbeat_at == w.clock.now()
