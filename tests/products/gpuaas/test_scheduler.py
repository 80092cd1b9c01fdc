"""The placement pass against the database: best fit, the queue, cordoned nodes, requeue."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import func, select

from aicloud.products import gpuaas
from aicloud.products.gpuaas.models import GpuAssignmentModel
from aicloud.shared.db import Database
from tests.products.gpuaas.world import ADMIN, make_world


def test_best_fit_then_queue_then_placed_when_capacity_frees(db: Database) -> None:
    w = make_world(db)
    big = w.add_node("big", gpus=8)
    small = w.add_node("small", gpus=2)
    a = w.launch("a", "gpu.h100.2x")
    b = w.launch("b", "gpu.h100.8x")
    c = w.launch("c", "gpu.h100.4x")
    placed = {p.request_id: p.node_id for p in w.schedule()}
    # a fills the small node exactly (best fit), b takes the big one, c waits.
    assert placed == {a.id: small, b.id: big}
    assert w.get(c.id).state == "admitted" and w.get(c.id).queue_position == 1
    d = w.launch("d", "gpu.h100.1x")
    assert w.get(d.id).queue_position == 2  # FIFO behind c (same model: head-of-line)
    assert w.schedule() == []
    w.stop(b.id)  # scheduled, never started: cancelled, GPUs back
    assert w.get(b.id).state == "stopped"
    assert w.get(b.id).transitions[-1].reason.startswith("cancelled: ")
    placed = {p.request_id: p.node_id for p in w.schedule()}
    assert placed == {c.id: big, d.id: big}
    with db.transaction() as s:
        assert s.scalar(select(func.count()).select_from(GpuAssignmentModel)) == 2 + 4 + 1


def test_priority_jumps_the_queue(db: Database) -> None:
    w = make_world(db)
    w.add_node("n", gpus=1)
    w.launch("first")
    w.schedule()
    low = w.launch("low")
    high = w.launch("high", priority=5)
    assert (w.get(high.id).queue_position, w.get(low.id).queue_position) == (1, 2)


def test_never_on_cordoned_or_down_nodes(db: Database) -> None:
    w = make_world(db)
    n = w.add_node("n", gpus=8)
    with db.transaction() as s:
        gpuaas.change_node_state(s, n, "cordon", actor=ADMIN, now=w.clock.now())
    inst = w.launch("a")
    assert w.schedule() == []
    with db.transaction() as s:
        gpuaas.change_node_state(s, n, "uncordon", actor=ADMIN, now=w.clock.now())
    assert [p.request_id for p in w.schedule()] == [inst.id]
    # The node goes silent: a scheduled instance is requeued, the node is down.
    w.clock.advance(120)
    with db.transaction() as s:
        assert gpuaas.mark_silent_nodes_down(s, now=w.clock.now(),
                                             timeout=timedelta(seconds=30)) == 1
    got = w.get(inst.id)
    assert got.state == "admitted" and "requeued: node n went down" in got.state_reason
    assert w.schedule() == []


def test_unhealthy_gpu_is_taken_out_of_placement_at_once(db: Database) -> None:
    w = make_world(db)
    w.add_node("n", gpus=2)
    report = gpuaas.NodeReport(name="n", inventory_source="static", simulated=True, gpus=(
        gpuaas.GpuReport(0, "H100", "H100", 80, healthy=False, health_detail="XID 79"),
        gpuaas.GpuReport(1, "H100", "H100", 80)))
    with db.transaction() as s:
        gpuaas.register_node(s, report, actor=ADMIN, now=w.clock.now())
        [view] = gpuaas.list_nodes(s)
    assert [(g.index, g.healthy, g.health_detail) for g in view.gpus] == [
        (0, False, "XID 79"), (1, True, "")]
    a = w.launch("a")
    w.launch("b")
    placed = w.schedule()
    assert [(p.request_id, p.gpu_indices) for p in placed] == [(a.id, (1,))]
