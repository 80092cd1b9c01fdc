"""Idle policies on real workloads: an idle instance is warned, then stopped with the reason
and the metric window recorded; an exempt one is left alone; a long-stopped one is warned,
then deleted; and two workers acting at once take each step exactly once."""

from __future__ import annotations

import json
import threading
from pathlib import Path

from sqlalchemy import select

from aicloud.adapters.metrics.collector import MetricsCollector
from aicloud.adapters.metrics.simulated import SimulatedGpu, SimulatedGpuMetrics
from aicloud.adapters.providers.local.provider import LocalProvider
from aicloud.platform import iam, policy
from aicloud.platform.audit.models import AuditEventModel
from aicloud.products import gpuaas
from aicloud.shared import events
from aicloud.shared.db import Database
from aicloud.shared.errors import NotFound
from tests.products.gpuaas.world import ADMIN, World, h100s, make_world

RULE = policy.IdlePolicySpec(threshold_pct=5, idle_minutes=30, warn_minutes=5,
                             delete_after_days=1)


def _set_policy(w: World, spec: policy.IdlePolicySpec = RULE) -> policy.IdlePolicy:
    with w.db.transaction() as s:
        org_path = f"/{w.org_id}"
        return policy.set_idle_policy(s, actor=ADMIN, scope_path=org_path,
                                      instance_type=policy.ALL_CLASSES, spec=spec)


def _exempt_user(w: World, instance_id: str) -> None:
    """Bob launched ``instance_id``; an org admin exempts that one instance for him with a
    custom role bound on it, as any role is bound."""
    with w.db.transaction() as s:
        role = iam.create_role(s, w.org_id, iam.RoleCreate(
            name="idle-exempt", permissions=["policy.idle.exempt"]), actor=ADMIN,
            grantor=None)
        iam.create_binding(s, w.project_id, iam.RoleBindingCreate(
            principal_id=w.user_id, role_id=role.id,
            resource=iam.ResourceScope(type="instance", id=instance_id)),
            actor=ADMIN, grantor=None)


def _audit(db: Database, action: str, target: str) -> list[dict[str, object]]:
    with db.transaction() as s:
        return [json.loads(e.details) for e in s.scalars(select(AuditEventModel).where(
            AuditEventModel.action == action, AuditEventModel.target_id == target))]


def test_idle_instance_is_warned_then_stopped_and_later_deleted(db: Database,
                                                                tmp_path: Path) -> None:
    w = make_world(db)
    with db.transaction() as s:
        bob = iam.create_user(s, email="bob@acme.example")
        iam.create_binding(s, w.project_id, iam.RoleBindingCreate(
            principal_id=bob.id, role_id="project-member"), actor=ADMIN, grantor=None)
    provider = LocalProvider(tmp_path / "workloads")
    try:
        report = gpuaas.NodeReport(name="n1", inventory_source="static", simulated=True,
                                   gpus=h100s(8))
        # The agent's heartbeat carries its collector's samples, as in production; the
        # collector's clocks are the test's.
        collector = MetricsCollector(
            SimulatedGpuMetrics([SimulatedGpu(g.index, "H100", 80, g.uuid) for g in h100s(8)]),
            provider, monotonic=lambda: w.clock.now().timestamp(), wall=w.clock.now)
        agent = gpuaas.NodeAgent(store=gpuaas.DbNodeStore(db, clock=w.clock), provider=provider,
                                 report=lambda: report, clock=w.clock, stop_grace_seconds=1,
                                 metrics=collector)
        agent.heartbeat()
        idle = w.launch("idle")  # the shell template: waits for a terminal, computes nothing
        w.user_id = bob.id
        spared = w.launch("spared")
        _exempt_user(w, spared.id)
        w.schedule()
        agent.reconcile_once()
        assert {w.get(idle.id).state, w.get(spared.id).state} == {"running"}
        agent.reconcile_once()  # the pass that reads them running: what metrics cover
        rule = _set_policy(w)
        enforcer = gpuaas.IdlePolicyEnforcer(db, clock=w.clock)
        warned_at = stopped_at = None
        for minute in range(1, 40):
            w.clock.advance(60)
            agent.heartbeat()
            enforcer.run_once()
            agent.reconcile_once()
            with db.read_transaction() as s:
                kinds = [e.kind for e in gpuaas.instance_events(s, idle.id)]
            if warned_at is None and "idle_warning" in kinds:
                warned_at = minute
            if stopped_at is None and "idle_stop" in kinds:
                stopped_at = minute
        # The first report came a minute after the start: idle for 25 minutes at minute 26,
        # warned then; stopped 5 minutes later, idle 30 minutes.
        assert (warned_at, stopped_at) == (26, 31)
        got = w.get(idle.id)
        assert got.state == "stopped"
        assert got.state_reason.startswith(f"idle policy {rule.id} of /{w.org_id}: GPU "
                                           "utilization below 5% for 30 min"), got.state_reason
        with db.read_transaction() as s:
            evs = gpuaas.instance_events(s, idle.id)
        assert [e.kind for e in evs] == ["idle_warning", "idle_stop"]
        evidence = evs[1].details["evidence"]
        assert isinstance(evidence, dict)
        assert evidence["source"] == "simulated" and evidence["idle_minutes"] == 30
        # One-minute buckets from the first report (minute 1) to the last (minute 31).
        assert evidence["max_avg_pct"] < 5 and len(evidence["series"]) == evidence["buckets"] == 31
        # The audit log has the warning and the stop with the same window.
        stop_audit = _audit(db, "gpuaas.instance.idle_stop", idle.id)
        assert len(stop_audit) == 1 and stop_audit[0]["evidence"] == evidence
        assert len(_audit(db, "gpuaas.instance.idle_warning", idle.id)) == 1
        # The warning went out as an outbox event (notifications, webhooks), before the stop.
        with db.read_transaction() as s:
            published = events.read(s, "test", topics=[gpuaas.IDLE_WARNING_TOPIC])
        assert [(e.payload["instance_id"], e.payload["action"]) for e in published] == [
            (idle.id, "stop")]
        # The exempt instance idled just as long and is untouched.
        assert w.get(spared.id).state == "running"
        with db.read_transaction() as s:
            assert gpuaas.instance_events(s, spared.id) == []

        # Stopped for a day: warned, then deleted 5 minutes later; its node forgets the workload.
        w.clock.advance(days=1)
        assert enforcer.run_once() == 1
        assert enforcer.run_once() == 0  # warned already; the notice runs
        with db.read_transaction() as s:
            assert [e.kind for e in gpuaas.instance_events(s, idle.id)][-1] == \
                "idle_delete_warning"
        w.clock.advance(minutes=5)
        assert enforcer.run_once() == 1
        try:
            w.get(idle.id)
            raise AssertionError("the instance should be deleted")
        except NotFound:
            pass
        assert len(_audit(db, "gpuaas.instance.delete", idle.id)) == 1
        agent.heartbeat()  # kills and removes the leftovers of rows that are gone
        assert idle.id not in {h.ref for h in provider.list_workloads()}
    finally:  # never leave processes behind, even when an assertion failed
        for handle in provider.list_workloads():
            provider.stop(handle, grace_seconds=0.5)

def _running_without_workload(w: World, name: str) -> str:
    """An instance in ``running`` on a registered node (no agent: the test reports for it)."""
    inst = w.launch(name)
    w.schedule()
    with w.db.transaction() as s:
        m = gpuaas.get_instance_model(s, inst.id, for_update=True)
        gpuaas.switch_instance_status(s, m, gpuaas.InstanceState.PROVISIONING, reason="t",
                                      actor=ADMIN, at=w.clock.now())
        gpuaas.switch_instance_status(s, m, gpuaas.InstanceState.RUNNING, reason="t",
                                      actor=ADMIN, at=w.clock.now())
        m.started_at = m.last_metered_at = w.clock.now()
    return inst.id


def _report_idle(w: World, node_id: str, instance_id: str) -> None:
    at = w.clock.now().isoformat()
    with w.db.transaction() as s:
        gpuaas.record_node_metrics(s, node_id, [{
            "resource_id": instance_id, "at": at, "cpu_cores": 0.0, "memory_bytes": 10**7,
            "gpus": [{"index": 0, "uuid": None, "source": "simulated",
                      "utilization_pct": 0.4, "memory_used_bytes": 2**29,
                      "memory_total_bytes": 80 * 2**30, "power_watts": 71.0,
                      "temperature_c": 33.0}]}], now=w.clock.now())


def test_two_workers_at_once_warn_once_and_stop_once(db: Database) -> None:
    w = make_world(db)
    node_id = w.add_node("n1", gpus=1)
    instance_id = _running_without_workload(w, "idle")
    _set_policy(w)
    workers = [gpuaas.IdlePolicyEnforcer(db, clock=w.clock) for _ in range(2)]

    def both() -> list[int]:
        gate = threading.Barrier(2)
        done: list[int] = []

        def run(worker: gpuaas.IdlePolicyEnforcer) -> None:
            gate.wait()
            done.append(worker.run_once())
        threads = [threading.Thread(target=run, args=(k,)) for k in workers]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        return sorted(done)

    for minute in range(1, 33):
        w.clock.advance(60)
        _report_idle(w, node_id, instance_id)
        if minute in (26, 30, 31):
            assert sum(both()) == (0 if minute == 30 else 1), minute
    with db.read_transaction() as s:
        assert [e.kind for e in gpuaas.instance_events(s, instance_id)] == [
            "idle_warning", "idle_stop"]
        stops = s.scalars(select(AuditEventModel).where(
            AuditEventModel.action.in_(["gpuaas.instance.idle_stop",
                                        "gpuaas.instance.stop_request"]),
            AuditEventModel.target_id == instance_id)).all()
    assert sorted(e.action for e in stops) == ["gpuaas.instance.idle_stop",
                                               "gpuaas.instance.stop_request"]
    assert w.get(instance_id).stop_reason.startswith("idle policy")  # type: ignore[union-attr]
