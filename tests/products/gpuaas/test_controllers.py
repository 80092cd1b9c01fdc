"""Node monitor (silent nodes: down, their instances lost), drains, and the budget-stop
consumer reading billing's outbox. Usage is reported by the agent's heartbeat."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from aicloud.adapters.providers.base import WorkloadHandle
from aicloud.adapters.providers.local.provider import LocalProvider
from aicloud.platform import billing
from aicloud.products import gpuaas
from aicloud.shared.db import Database
from tests.products.gpuaas.world import ADMIN, World, h100s, make_world


def _running(w: World, root: Path, n: int = 1) -> tuple[gpuaas.NodeAgent, list[str]]:
    report = gpuaas.NodeReport(name="n1", inventory_source="static", simulated=True,
                               gpus=h100s(8))
    agent = gpuaas.NodeAgent(db=w.db, provider=LocalProvider(root), report=lambda: report,
                             clock=w.clock, stop_grace_seconds=1)
    agent.heartbeat()
    ids = [w.launch(f"i{i}").id for i in range(n)]
    w.schedule()
    agent.reconcile_once()
    assert all(w.get(i).state == "running" for i in ids)
    return agent, ids


def test_silent_node_goes_down_and_its_instances_are_lost(db: Database,
                                                          tmp_path: Path) -> None:
    w = make_world(db)
    agent, [inst] = _running(w, tmp_path / "wl")
    w.clock.advance(29)
    with db.transaction() as s:
        assert gpuaas.mark_silent_nodes_down(s, now=w.clock.now(),
                                             timeout=timedelta(seconds=30)) == 0
    w.clock.advance(2)
    with db.transaction() as s:
        assert gpuaas.mark_silent_nodes_down(s, now=w.clock.now(),
                                             timeout=timedelta(seconds=30)) == 1
        [node] = gpuaas.list_nodes(s)
    assert node.state == "down" and "no heartbeat since" in node.state_reason
    lost = w.get(inst)
    assert lost.state == "lost" and "node n1 went down" in lost.state_reason
    agent.heartbeat()  # the agent comes back: its leftover is killed, the node is ready
    with db.transaction() as s:
        assert gpuaas.list_nodes(s)[0].state == "ready"
    assert w.get(inst).state == "lost"  # not revived
    status = LocalProvider(tmp_path / "wl").status(WorkloadHandle("local", inst))
    assert not status.active


def test_drain_stops_running_instances_after_the_grace(db: Database, tmp_path: Path) -> None:
    w = make_world(db)
    agent, [inst] = _running(w, tmp_path / "wl")
    with db.transaction() as s:
        gpuaas.change_node_state(s, gpuaas.list_nodes(s)[0].id, "drain", actor=ADMIN,
                                 now=w.clock.now(), grace_seconds=60)
    queued = w.launch("later")
    assert w.schedule() == []  # a draining node takes nothing new
    w.clock.advance(59)
    with db.transaction() as s:
        assert gpuaas.enforce_drains(s, now=w.clock.now()) == 0
    w.clock.advance(1)
    with db.transaction() as s:
        assert gpuaas.enforce_drains(s, now=w.clock.now()) == 1
    agent.reconcile_once()
    got = w.get(inst)
    assert got.state == "stopped" and "drained: grace period over" in got.state_reason
    assert w.get(queued.id).state == "admitted"


def test_budget_with_stop_action_stops_the_scope_and_says_why(db: Database,
                                                             tmp_path: Path) -> None:
    w = make_world(db)
    agent, ids = _running(w, tmp_path / "wl", n=2)
    with db.transaction() as s:
        billing.create_budget(s, actor=ADMIN, spec=billing.BudgetCreate(
            scope_path=w.scope_path, amount=50_000, currency="USD", action="stop_workloads"))
    w.clock.advance(60)
    agent.heartbeat()  # 60 s x 2 instances x 988 micro-USD/s = 118,560 > 50,000
    billing.rate_until_idle(db, clock=w.clock)
    with db.transaction() as s:
        billing.evaluate_budgets(s, now=w.clock.now())
    consumer = gpuaas.BudgetStopConsumer(db, clock=w.clock)
    assert consumer.run_once() == 2
    assert consumer.run_once() == 0  # the cursor moved: acted on once
    agent.reconcile_once()
    for i in ids:
        got = w.get(i)
        assert got.state == "stopped"
        assert got.stop_reason is not None and "exhausted" in got.stop_reason
        assert "spent 118560 of 50000 micro-USD" in got.state_reason


def test_an_exhausted_wallet_stops_the_orgs_instances(db: Database, tmp_path: Path) -> None:
    w = make_world(db, funds=70_000)  # covers the 59,280 hold, not much more
    agent, [inst] = _running(w, tmp_path / "wl")
    consumer = gpuaas.BudgetStopConsumer(db, clock=w.clock)
    assert consumer.run_once() == 0  # still funded
    w.clock.advance(120)
    agent.heartbeat()  # 120 s x 988 = 118,560 charged once rated
    billing.rate_until_idle(db, clock=w.clock)
    assert consumer.run_once() == 1
    agent.reconcile_once()
    got = w.get(inst)
    assert got.state == "stopped" and "is exhausted" in got.state_reason


def test_a_running_instances_own_hold_neither_stops_it_nor_shows_in_the_reason(
        db: Database, tmp_path: Path) -> None:
    """The admission hold reserves the first 60 s; usage charges the same run time. Counting
    both stopped a funded instance early and printed a balance the wallet did not have."""
    w = make_world(db, funds=70_000)  # the hold takes 59,280 of it
    agent, [inst] = _running(w, tmp_path / "wl")
    consumer = gpuaas.BudgetStopConsumer(db, clock=w.clock)
    w.clock.advance(30)
    agent.heartbeat()  # 30 s x 988 = 29,640 charged: posted 40,360
    billing.rate_until_idle(db, clock=w.clock)
    assert w.wallet_balance().available < 0  # with its own hold counted
    assert consumer.run_once() == 0  # but the wallet still has 40,360
    w.clock.advance(60)
    agent.heartbeat()  # 90 s in all: 88,920 charged, posted -18,920
    billing.rate_until_idle(db, clock=w.clock)
    assert consumer.run_once() == 1
    agent.reconcile_once()
    reason = w.get(inst).state_reason
    assert "balance -18920 micro-USD, available -18920" in reason, reason
