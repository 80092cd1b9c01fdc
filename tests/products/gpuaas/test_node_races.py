"""Nodes leaving placement while a scheduler pass runs (two transactions, SQLite and
PostgreSQL): the change waits for the pass, then handles what it placed."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy.orm import Session

from aicloud.products import gpuaas
from aicloud.shared.db import Database
from aicloud.shared.errors import Conflict
from tests.products.gpuaas.world import ADMIN, make_world, second_waits_for_first

TIMEOUT = timedelta(seconds=30)


def test_a_node_going_down_during_a_pass_requeues_what_the_pass_placed(db: Database) -> None:
    w = make_world(db)
    w.add_node("n1", gpus=2)
    inst = w.launch("a")
    w.clock.advance(TIMEOUT.total_seconds() + 1)  # n1 is silent now

    def place(s: Session) -> None:
        assert len(gpuaas.schedule_pass(s, now=w.clock.now())) == 1

    def monitor() -> int:
        with db.transaction() as s:
            return gpuaas.mark_silent_nodes_down(s, now=w.clock.now(), timeout=TIMEOUT)
    assert second_waits_for_first(db, place, monitor) == 1
    # Not left "scheduled" on a down node (no agent would ever start it, nothing would free
    # its GPUs): back in the queue.
    got = w.get(inst.id)
    assert got.state == "admitted" and got.node_id is None, got


def test_a_cordon_racing_the_node_going_down_does_not_overwrite_down(db: Database) -> None:
    w = make_world(db)
    node = w.add_node("n1", gpus=2)
    w.clock.advance(TIMEOUT.total_seconds() + 1)

    def down(s: Session) -> None:
        assert gpuaas.mark_silent_nodes_down(s, now=w.clock.now(), timeout=TIMEOUT) == 1

    def cordon() -> object:
        with db.transaction() as s:
            gpuaas.get_node_model(s, node)  # what the route's scope resolver loads first
            return gpuaas.change_node_state(s, node, "cordon", actor=ADMIN,
                                            now=w.clock.now())
    result = second_waits_for_first(db, down, cordon)
    # Refused: a cordoned-over-down node could be uncordoned without its agent's reconcile.
    assert isinstance(result, Conflict) and "is down" in result.detail, result
    with db.transaction() as s:
        assert gpuaas.list_nodes(s)[0].state == "down"


def test_a_pass_racing_a_cancel_does_not_revive_the_cancelled_instance(db: Database) -> None:
    """The stop commits while the pass has already read the queue: the pass must not write
    the instance back to scheduled (it would run with its hold voided and its GPUs taken)."""
    w = make_world(db)
    w.add_node("n1", gpus=2)
    inst = w.launch("a")

    def cancel(s: Session) -> None:
        gpuaas.request_stop(s, inst.id, reason="changed my mind", actor=ADMIN,
                            now=w.clock.now())

    def place() -> int:
        with db.transaction() as s:
            return len(gpuaas.schedule_pass(s, now=w.clock.now()))
    assert second_waits_for_first(db, cancel, place) == 0
    got = w.get(inst.id)
    assert got.state == "stopped" and got.node_id is None, got
    with db.transaction() as s:
        assert all(g.instance_id is None for g in gpuaas.list_nodes(s)[0].gpus)


def test_a_node_going_down_racing_a_stop_ends_the_instance_once(db: Database) -> None:
    """A stop (budget, user) holds the row while the monitor loses the node: the monitor waits
    and then sees the instance as it is, one terminal transition, never two."""
    from sqlalchemy import func, select

    from aicloud.products.gpuaas.models import TransitionModel

    w = make_world(db)
    w.add_node("n1", gpus=2)
    inst = w.launch("a")
    w.schedule()
    w.clock.advance(TIMEOUT.total_seconds() + 1)

    def cancel(s: Session) -> None:  # scheduled: cancelled at once
        gpuaas.request_stop(s, inst.id, reason="stop", actor=ADMIN, now=w.clock.now())

    def monitor() -> int:
        with db.transaction() as s:
            return gpuaas.mark_silent_nodes_down(s, now=w.clock.now(), timeout=TIMEOUT)
    assert second_waits_for_first(db, cancel, monitor) == 1
    assert w.get(inst.id).state == "stopped"
    with db.transaction() as s:
        assert s.scalar(select(func.count()).select_from(TransitionModel).where(
            TransitionModel.instance_id == inst.id)) == 4  # requested, admitted, scheduled,
        #                                                   stopped: not requeued after it
