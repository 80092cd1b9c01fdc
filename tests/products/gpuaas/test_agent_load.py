"""The node agent's database load, counted by the database itself (WriteCounter): an idle node
with 8 running instances writes at most once per heartbeat interval (its heartbeat: the node,
every lease, the usage windows due), while its reconcile passes only read; usage windows still
land on time; a stop asked for on an idle node is still acted on at the next pass; a clean
stop hands the leases over at once, a dead agent's expire. Real local provider, real
processes, fake clock."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from itertools import pairwise
from pathlib import Path

import pytest
from sqlalchemy import select

from aicloud.adapters.providers.local.provider import LocalProvider
from aicloud.products import gpuaas
from aicloud.products.gpuaas.models import InstanceModel
from aicloud.shared.db import Database
from aicloud.shared.db.write_counter import WriteCounter
from tests.products.gpuaas.world import World, h100s, make_world, usage_windows

TICK = 0.5  # the reconcile interval the composition root gives the agent
BEAT = 10.0  # heartbeat interval (a third of the default 30 s node timeout)
WINDOW = 30.0  # usage_report_interval_seconds


def _agent(w: World, provider: LocalProvider, **kw: object) -> gpuaas.NodeAgent:
    report = gpuaas.NodeReport(name="n1", inventory_source="static", simulated=True,
                               gpus=h100s(8))
    kw.setdefault("heartbeat_interval", timedelta(seconds=BEAT))
    kw.setdefault("meter_interval", timedelta(seconds=WINDOW))
    return gpuaas.NodeAgent(
        store=gpuaas.DbNodeStore(w.db, clock=w.clock),
        provider=provider, report=lambda: report, clock=w.clock, stop_grace_seconds=1,
        **kw)  # type: ignore[arg-type]


@pytest.fixture
def eight(db: Database, tmp_path: Path) -> Iterator[tuple[World, gpuaas.NodeAgent, list[str]]]:
    """A node with 8 running instances (8 idle shell workloads)."""
    w = make_world(db)
    agent = _agent(w, LocalProvider(tmp_path / "wl"))
    agent.heartbeat()
    ids = [w.launch(f"i{i}").id for i in range(8)]
    w.schedule()
    agent.reconcile_once()
    assert [w.get(i).state for i in ids] == ["running"] * 8
    yield w, agent, ids
    for i in ids:
        w.stop(i)
    agent.reconcile_once()


def _run(w: World, agent: gpuaas.NodeAgent, seconds: float,
         after_beat: object = None) -> None:
    """The agent's two controllers in fake time: a reconcile pass every TICK, a heartbeat
    every BEAT (starting with one now)."""
    elapsed, next_beat = 0.0, 0.0
    while elapsed < seconds:
        if elapsed >= next_beat:
            agent.heartbeat()
            next_beat += BEAT
            if callable(after_beat):
                after_beat()
        agent.reconcile_once()
        w.clock.advance(TICK)
        elapsed += TICK


def test_an_idle_node_with_8_instances_writes_once_per_heartbeat_interval(
        eight: tuple[World, gpuaas.NodeAgent, list[str]]) -> None:
    w, agent, ids = eight
    intervals = 6  # 60 s: two usage windows fall due on the way
    with WriteCounter(w.db.engine) as counter:
        _run(w, agent, intervals * BEAT)
    assert counter.writes <= intervals, (counter.writes, counter.reads)
    # It kept reading (every pass), and it still metered: each instance has its windows.
    assert counter.reads >= intervals * BEAT / TICK
    for i in ids:
        assert usage_windows(w.db, i), i
    assert sorted(agent.held()) == sorted(ids)  # every lease renewed, none lost


def test_a_stop_on_an_idle_node_is_acted_on_at_the_next_pass(
        eight: tuple[World, gpuaas.NodeAgent, list[str]]) -> None:
    w, agent, ids = eight
    _run(w, agent, 2 * BEAT)
    w.stop(ids[3], "not needed")
    assert agent.reconcile_once() == 1  # one instance needed something
    got = w.get(ids[3])
    assert got.state == "stopped" and got.state_reason == "not needed"
    assert ids[3] not in agent.held()  # ended: its lease cleared with it
    with w.db.transaction() as s:
        row = s.get(InstanceModel, ids[3])
        assert row is not None and (row.lock_token, row.lock_expires_at) == (None, None)
    assert [w.get(i).state for i in ids].count("running") == 7


def test_usage_windows_land_on_time_and_tile_the_run(db: Database, tmp_path: Path) -> None:
    """Heartbeats every 7 s (not a divisor of the 30 s window): each heartbeat reports the
    windows that would be late at the next one, so no window is ever longer than 30 s nor
    reported after it was due, and the windows tile the run to the second."""
    w = make_world(db)
    agent = _agent(w, LocalProvider(tmp_path / "wl"), heartbeat_interval=timedelta(seconds=7))
    agent.heartbeat()
    inst = w.launch("a")
    w.schedule()
    agent.reconcile_once()
    started = w.get(inst.id).started_at
    assert started is not None
    for _ in range(20):  # 140 s
        w.clock.advance(7)
        agent.heartbeat()
        with db.transaction() as s:
            last = s.scalar(select(InstanceModel.last_metered_at)
                            .where(InstanceModel.id == inst.id))
        assert last is not None
        # Never overdue: the unreported time stays below one window.
        assert (w.clock.now() - last).total_seconds() < WINDOW
    windows = usage_windows(db, inst.id)
    assert windows[0][0] == started
    assert all(b[0] == a[1] for a, b in pairwise(windows))  # tiled
    assert all(0 < (end - start).total_seconds() <= WINDOW for start, end in windows)
    w.stop(inst.id)
    agent.reconcile_once()


def test_a_clean_stop_hands_leases_over_at_once_a_dead_agents_expire(
        db: Database, tmp_path: Path) -> None:
    w = make_world(db)
    root = tmp_path / "wl"
    first = _agent(w, LocalProvider(root), lease_ttl=timedelta(seconds=30))
    first.heartbeat()
    ids = [w.launch(f"i{i}").id for i in range(3)]
    w.schedule()
    first.reconcile_once()
    assert first.held() == sorted(ids)
    # A dead agent (never renews, never releases): the next one waits out the lease.
    second = _agent(w, LocalProvider(root), lease_ttl=timedelta(seconds=30))
    second.heartbeat()
    second.reconcile_once()
    assert second.held() == []
    w.clock.advance(29)
    second.reconcile_once()
    assert second.held() == []
    w.clock.advance(1)
    second.heartbeat()
    second.reconcile_once()
    assert second.held() == sorted(ids)
    assert [w.get(i).state for i in ids] == ["running"] * 3  # re-attached, not restarted
    # The dead one's late write is refused: its token no longer matches.
    w.stop(ids[0])
    assert first.reconcile_once() == 0 and w.get(ids[0]).state == "running"
    assert first.held() == []
    # A clean stop: the next agent takes over in its first pass.
    assert second.release_leases() == 3
    third = _agent(w, LocalProvider(root))
    third.heartbeat()
    third.reconcile_once()
    assert w.get(ids[0]).state == "stopped"
    assert third.held() == sorted(ids[1:])
    for i in ids[1:]:
        w.stop(i)
    third.reconcile_once()
    with db.transaction() as s:
        transitions = [t.to_state for i in ids for t in gpuaas.get_instance(s, i).transitions]
    assert transitions.count("running") == 3 and transitions.count("provisioning") == 3


def test_the_composition_roots_agent_beats_within_a_window_and_hands_back_on_stop(
        sqlite_db: Database, tmp_path: Path) -> None:
    """build_agent: heartbeat a third of the node timeout but never longer than a usage
    window, leases of one node timeout; its controllers, stopped, hand the leases back."""
    import time

    from aicloud.runtime import gpuaas as gpuaas_runtime
    from aicloud.shared.config import Settings
    from aicloud.shared.controllers import ControllerRunner

    settings = Settings(node_heartbeat_timeout_seconds=30, usage_report_interval_seconds=5,
                        controller_interval_seconds=0.2)
    w = make_world(sqlite_db)
    agent = gpuaas_runtime.build_agent(settings, sqlite_db, w.clock,
                                       provider=LocalProvider(tmp_path / "wl"),
                                       node_name="n1")
    assert agent.heartbeat_interval == timedelta(seconds=5)
    assert agent.lease_ttl == timedelta(seconds=30)
    controllers = gpuaas_runtime.agent_controllers(settings, agent)
    assert [c.interval_seconds for c in controllers] == [5, 0.2]
    agent.heartbeat()
    inst = w.launch("a")
    w.schedule()
    runner = ControllerRunner(controllers)
    runner.start()
    try:
        deadline = time.monotonic() + 30
        while w.get(inst.id).state != "running":
            assert time.monotonic() < deadline
            time.sleep(0.1)
        assert agent.held() == [inst.id]
    finally:
        runner.stop()
    assert agent.held() == []
    with sqlite_db.transaction() as s:
        row = s.get(InstanceModel, inst.id)
        assert row is not None and row.state == "running" and row.lock_token is None
    w.stop(inst.id)
    gpuaas_runtime.build_agent(settings, sqlite_db, w.clock,
                               provider=LocalProvider(tmp_path / "wl"),
                               node_name="n1").reconcile_once()  # taken over at once
    assert w.get(inst.id).state == "stopped"
