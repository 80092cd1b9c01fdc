"""A node that comes back after being marked down: the agent kills the workloads that ran
there before (their instances are lost, their GPUs given back) BEFORE the node takes new
placements. Also: a workload whose instance row is gone is killed and removed; one that a
SIGKILLed agent created but never started is finished, not killed. Real local provider, real
processes."""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path

from sqlalchemy import delete

from aicloud.adapters.providers.base import WorkloadHandle, WorkloadPhase
from aicloud.adapters.providers.local.provider import LocalProvider
from aicloud.products import gpuaas
from aicloud.products.gpuaas.models import InstanceModel
from aicloud.shared.db import Database
from tests.products.gpuaas.world import ADMIN, World, h100s, make_world

TIMEOUT = timedelta(seconds=30)


def _agent(w: World, provider: LocalProvider, gpus: int = 1) -> gpuaas.NodeAgent:
    report = gpuaas.NodeReport(name="n1", inventory_source="static", simulated=True,
                               gpus=h100s(gpus))
    return gpuaas.NodeAgent(
        store=gpuaas.DbNodeStore(w.db, clock=w.clock),
        provider=provider, report=lambda: report, clock=w.clock, stop_grace_seconds=1)


def _pid(root: Path, ref: str) -> int:
    import json

    return int(json.loads((root / ref / "state.json").read_text())["pid"])


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie (ended, not yet reaped by its parent) no longer runs.
    stat = Path(f"/proc/{pid}/stat")
    return not (stat.exists() and stat.read_text().split(") ")[1].startswith("Z"))


def _node_state(w: World) -> str:
    with w.db.transaction() as s:
        return gpuaas.list_nodes(s)[0].state


def test_a_node_back_from_down_kills_its_old_workload_before_it_is_schedulable(
        db: Database, tmp_path: Path) -> None:
    w = make_world(db)
    root = tmp_path / "wl"
    provider = LocalProvider(root)
    agent = _agent(w, provider)
    agent.heartbeat()
    old = w.launch("old")
    w.schedule()
    agent.reconcile_once()
    assert w.get(old.id).state == "running"
    pid = _pid(root, old.id)
    assert _alive(pid)
    queued = w.launch("queued")  # waits for the node's only GPU
    # The node goes silent: the instance is lost, its GPU freed; the process still runs.
    w.clock.advance(TIMEOUT.total_seconds() + 1)
    with db.transaction() as s:
        assert gpuaas.mark_silent_nodes_down(s, now=w.clock.now(), timeout=TIMEOUT) == 1
    assert w.get(old.id).state == "lost" and _alive(pid)
    assert w.schedule() == []
    # A bare heartbeat (registration) no longer brings the node back: GPU 0 is still in use.
    report = gpuaas.NodeReport(name="n1", inventory_source="static", simulated=True,
                               gpus=h100s(1))
    with db.transaction() as s:
        gpuaas.register_node(s, report, actor=ADMIN, now=w.clock.now())
    assert _node_state(w) == "down" and w.schedule() == []
    # The agent's heartbeat kills the old process first, then the node is ready.
    agent.heartbeat()
    assert not _alive(pid)
    assert _node_state(w) == "ready"
    [placed] = w.schedule()
    assert (placed.request_id, placed.gpu_indices) == (queued.id, (0,))
    assert w.get(old.id).state == "lost"  # not revived; its output is kept for its logs
    assert provider.status(WorkloadHandle("local", old.id)).phase is WorkloadPhase.EXITED
    agent.reconcile_once()
    assert w.get(queued.id).state == "running"
    w.stop(queued.id)
    agent.reconcile_once()


def test_a_workload_whose_instance_row_is_gone_is_killed_and_removed(
        db: Database, tmp_path: Path) -> None:
    w = make_world(db)
    root = tmp_path / "wl"
    provider = LocalProvider(root)
    agent = _agent(w, provider, gpus=2)
    agent.heartbeat()
    keep, gone = w.launch("keep"), w.launch("gone")
    w.schedule()
    agent.reconcile_once()
    pids = {i: _pid(root, i) for i in (keep.id, gone.id)}
    with db.transaction() as s:  # the row vanishes (deleted behind the product's back)
        s.execute(delete(InstanceModel).where(InstanceModel.id == gone.id))
    killed = agent.kill_leftovers()
    assert killed == [gone.id]
    assert not _alive(pids[gone.id]) and _alive(pids[keep.id])
    assert [h.ref for h in provider.list_workloads()] == [keep.id]  # removed
    assert w.get(keep.id).state == "running"
    assert agent.kill_leftovers() == []  # nothing else to do
    w.stop(keep.id)
    agent.reconcile_once()
    assert not _alive(pids[keep.id])


def test_an_agent_killed_between_create_and_start_is_finished_not_killed(
        db: Database, tmp_path: Path) -> None:
    w = make_world(db)
    root = tmp_path / "wl"
    dead = _agent(w, LocalProvider(root))
    dead.heartbeat()
    inst = w.launch("half")
    w.schedule()
    # What the agent had done when it was SIGKILLed: the row is provisioning, the workload
    # is created but not started.
    with db.transaction() as s:
        m = gpuaas.get_instance_model(s, inst.id)
        gpuaas.switch_instance_status(s, m, gpuaas.InstanceState.PROVISIONING,
                                      reason="provisioning", actor=ADMIN, at=w.clock.now())
        spec = dead._spec(m)
    LocalProvider(root).create(spec)
    restarted = _agent(w, LocalProvider(root))
    assert restarted.heartbeat()
    assert restarted.kill_leftovers() == []  # it should run here: not a leftover
    restarted.reconcile_once()
    assert w.get(inst.id).state == "running"
    assert _alive(_pid(root, inst.id))
    w.stop(inst.id)
    restarted.reconcile_once()
    assert w.get(inst.id).state == "stopped"
