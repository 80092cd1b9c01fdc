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
