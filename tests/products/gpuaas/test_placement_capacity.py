"""The maintained free capacity (``gpuaas_node_capacity``) on both databases: it always equals
what nodes, GPUs and assignments imply, whatever happens (random launches, passes, stops,
agents ending instances, cordons, drains, nodes going down and coming back, GPUs turning
unhealthy or disappearing, several writers at once); a pass places exactly like the
in-memory engine rebuilt from the database; and admission and passes read as much with a
pool of 400 nodes as with 20."""

from __future__ import annotations

import random
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta

import pytest
from sqlalchemy import event, select, text
from sqlalchemy.orm import Session

from aicloud.products import gpuaas
from aicloud.products.gpuaas import capacity
from aicloud.products.gpuaas.models import (
    GpuModel,
    InstanceModel,
    NodeCapacityModel,
    NodeModel,
)
from aicloud.products.gpuaas.nodes import node_reconciled
from aicloud.shared.db import Database
from aicloud.shared.errors import AppError
from tests.products.gpuaas.world import ADMIN, T0, World, make_world, second_waits_for_first

TIMEOUT = timedelta(seconds=30)
TYPES = ("gpu.h100.1x", "gpu.h100.2x", "gpu.h100.4x", "gpu.h100.8x", "gpu.a100.1x",
         "gpu.a100.2x")


def _report(name: str, h100: int, a100: int = 0, unhealthy: frozenset[int] = frozenset(),
            missing: frozenset[int] = frozenset()) -> gpuaas.NodeReport:
    gpus = [gpuaas.GpuReport(index=i, model="H100" if i < h100 else "A100", name="sim",
                             memory_gib=80, healthy=i not in unhealthy,
                             health_detail="XID 79" if i in unhealthy else "")
            for i in range(h100 + a100) if i not in missing]
    return gpuaas.NodeReport(name=name, inventory_source="static", simulated=True,
                             gpus=tuple(gpus))


def _assert_true(db: Database, step: str) -> None:
    with db.transaction() as s:
        assert capacity.drift(s) == {}, f"capacity drifted after {step}"


def _node_ids(s: Session) -> dict[str, str]:
    return dict(s.execute(select(NodeModel.name, NodeModel.id)).all())  # type: ignore[arg-type]


class Chaos:
    """Random operations through the service functions (what routes, controllers and agents
    call), with the node reports the agents would send."""

    def __init__(self, w: World, seed: int):
        self.w, self.rnd = w, random.Random(seed)
        self.shapes: dict[str, tuple[int, int]] = {}  # node name -> (H100s, A100s)
        self.unhealthy: dict[str, set[int]] = {}
        self.missing: dict[str, set[int]] = {}

    def report(self, name: str) -> gpuaas.NodeReport:
        h, a = self.shapes[name]
        return _report(name, h, a, frozenset(self.unhealthy[name]),
                       frozenset(self.missing[name]))

    def heartbeat(self, name: str) -> None:
        with self.w.db.transaction() as s:
            gpuaas.register_node(s, self.report(name), actor=ADMIN, now=self.w.clock.now())

    def add_node(self) -> str:
        name = f"n{len(self.shapes)}"
        self.shapes[name] = (self.rnd.choice((1, 2, 4, 8)), self.rnd.choice((0, 0, 2)))
        self.unhealthy[name], self.missing[name] = set(), set()
        self.heartbeat(name)
        return "add node"

    def launch(self) -> str:
        try:
            self.w.launch("x", self.rnd.choice(TYPES), priority=self.rnd.choice((0, 0, 5)))
        except gpuaas.CannotPlace:
            pass
        return "launch"

    def schedule(self) -> str:
        self.w.schedule()
        return "pass"

    def _instances(self, *states: str) -> list[InstanceModel]:
        with self.w.db.transaction() as s:
            return list(s.scalars(select(InstanceModel).where(InstanceModel.state.in_(states))
                                  .order_by(InstanceModel.id)))

    def stop(self) -> str:
        live = self._instances("admitted", "scheduled", "provisioning", "running")
        if live:
            self.w.stop(self.rnd.choice(live).id)
        return "stop"

    def agent_step(self) -> str:
        """What an agent does: start a scheduled instance, or end a running one."""
        live = self._instances("scheduled", "provisioning", "running")
        if not live:
            return "agent (idle)"
        inst_id = self.rnd.choice(live).id
        with self.w.db.transaction() as s:
            inst = gpuaas.get_instance_model(s, inst_id, for_update=True)
            nxt = {"scheduled": "provisioning", "provisioning": "running",
                   "running": self.rnd.choice(("succeeded", "failed", "stopping"))
                   }.get(inst.state)
            if nxt is None:  # another thread ended it between the listing and the lock
                return f"agent (raced: {inst.state})"
            gpuaas.switch_instance_status(s, inst, gpuaas.InstanceState(nxt), reason="agent",
                                          actor=ADMIN, at=self.w.clock.now())
        return f"agent -> {nxt}"

    def node_action(self) -> str:
        if not self.shapes:
            return "node action (none)"
        name = self.rnd.choice(sorted(self.shapes))
        action = self.rnd.choice(("cordon", "drain", "uncordon", "uncordon"))
        try:
            with self.w.db.transaction() as s:
                gpuaas.change_node_state(s, _node_ids(s)[name], action, actor=ADMIN,
                                         now=self.w.clock.now())
        except AppError:  # down: it comes back through its agent only
            pass
        return action

    def health(self) -> str:
        if not self.shapes:
            return "health (none)"
        name = self.rnd.choice(sorted(self.shapes))
        h, a = self.shapes[name]
        index = self.rnd.randrange(h + a)
        bad = self.unhealthy[name]
        bad.symmetric_difference_update({index})
        self.heartbeat(name)
        return "gpu health"

    def gpu_vanishes(self) -> str:
        if not self.shapes:
            return "gpu vanishes (none)"
        name = self.rnd.choice(sorted(self.shapes))
        h, a = self.shapes[name]
        self.missing[name].symmetric_difference_update({self.rnd.randrange(h + a)})
        self.heartbeat(name)
        return "gpu vanishes or returns"

    def node_down_and_back(self) -> str:
        if not self.shapes:
            return "down (none)"
        silent = self.rnd.choice(sorted(self.shapes))
        self.w.clock.advance(TIMEOUT.total_seconds() + 1)
        for name in self.shapes:
            if name != silent:
                self.heartbeat(name)
        with self.w.db.transaction() as s:
            gpuaas.mark_silent_nodes_down(s, now=self.w.clock.now(), timeout=TIMEOUT)
        _assert_true(self.w.db, f"{silent} went down")
        self.heartbeat(silent)
        with self.w.db.transaction() as s:
            node_reconciled(s, _node_ids(s)[silent], killed=[], actor=ADMIN)
        return "node down and back"

    def step(self) -> str:
        op = self.rnd.choices(
            [self.launch, self.schedule, self.stop, self.agent_step, self.node_action,
             self.health, self.gpu_vanishes, self.node_down_and_back, self.add_node],
            weights=[8, 5, 3, 4, 2, 2, 1, 1, 1])[0]
        return op()


def test_maintained_capacity_equals_what_the_assignments_imply(db: Database) -> None:
    w = make_world(db)
    chaos = Chaos(w, seed=20261202)
    for _ in range(4):
        chaos.add_node()
    for i in range(90):
        what = chaos.step()
        _assert_true(db, f"step {i}: {what}")
    with db.transaction() as s:
        stored = {(r.node_id, r.gpu_model): r.free for r in s.scalars(
            select(NodeCapacityModel))}
    assert stored and any(free for free in stored.values()), "the walk exercised nothing"


def test_a_wrong_row_is_seen_and_repaired(db: Database) -> None:
    """drift() is a real check (it finds a corrupted row), and rebuild() repairs it."""
    w = make_world(db)
    node = w.add_node("n1", gpus=4)
    with db.transaction() as s:
        s.execute(text("UPDATE gpuaas_node_capacity SET free = 1 WHERE node_id = :n"),
                  {"n": node})
    with db.transaction() as s:
        assert capacity.drift(s) == {(node, "H100"): ((4, 1), (4, 4))}
        assert capacity.rebuild(s) == 1
    _assert_true(db, "rebuild")


def test_concurrent_writers_keep_capacity_true(db: Database) -> None:
    """Passes, stops, agents ending instances, heartbeats flipping GPU health and operators
    cordoning, all at once in threads (separate transactions; on PostgreSQL truly
    concurrent): no deadlock, no error, and the capacity is true at the end."""
    w = make_world(db)
    for i in range(3):
        w.add_node(f"n{i}", gpus=4)
    errors: list[BaseException] = []
    stop = threading.Event()

    def loop(seed: int, ops: Callable[[Chaos], list[Callable[[], str]]]) -> None:
        chaos = Chaos(w, seed)
        chaos.shapes = {f"n{i}": (4, 0) for i in range(3)}
        chaos.unhealthy = {n: set() for n in chaos.shapes}
        chaos.missing = {n: set() for n in chaos.shapes}
        try:
            for _ in range(25):
                if stop.is_set():
                    return
                chaos.rnd.choice(ops(chaos))()
        except BaseException as e:
            errors.append(e)
            stop.set()

    workers = [
        threading.Thread(target=loop, args=(1, lambda c: [c.launch, c.launch, c.schedule])),
        threading.Thread(target=loop, args=(2, lambda c: [c.schedule, c.stop])),
        threading.Thread(target=loop, args=(3, lambda c: [c.agent_step, c.launch])),
        threading.Thread(target=loop, args=(4, lambda c: [c.health, c.node_action])),
    ]
    for t in workers:
        t.start()
    for t in workers:
        t.join(120)
    assert not any(t.is_alive() for t in workers), "a writer hung"
    assert errors == [], errors
    _assert_true(db, "concurrent writers")


# --- the pass places like the engine ----------------------------------------------------------


def _random_pool(w: World, rnd: random.Random, nodes: int) -> Chaos:
    chaos = Chaos(w, rnd.randrange(10**6))
    for _ in range(nodes):
        chaos.add_node()
    for name in sorted(chaos.shapes):
        roll = rnd.random()
        if roll < 0.15:
            with w.db.transaction() as s:
                gpuaas.change_node_state(s, _node_ids(s)[name], rnd.choice(("cordon", "drain")),
                                         actor=ADMIN, now=w.clock.now())
        elif roll < 0.35:
            h, a = chaos.shapes[name]
            chaos.unhealthy[name].add(rnd.randrange(h + a))
            chaos.heartbeat(name)
    return chaos


@pytest.mark.parametrize("backfill", [False, True], ids=["head-of-line", "backfill"])
def test_a_pass_places_exactly_like_the_engine_rebuilt_from_the_database(
        db: Database, backfill: bool) -> None:
    rnd = random.Random(7 if backfill else 8)
    w = make_world(db)
    chaos = _random_pool(w, rnd, nodes=12)
    for _round in range(4):
        for _ in range(rnd.randrange(4, 14)):
            chaos.launch()
            w.clock.advance(1)
        with db.transaction() as s:
            engine = gpuaas.build_engine(s, with_queue=True)
        engine.backfill = backfill
        expected = sorted((p.request_id, p.node_id, p.gpu_indices) for p in engine.schedule())
        with db.transaction() as s:
            got = sorted((p.request_id, p.node_id, p.gpu_indices)
                         for p in gpuaas.schedule_pass(s, now=w.clock.now(), backfill=backfill))
        assert got == expected
        _assert_true(db, "pass")
        for _ in range(rnd.randrange(1, 5)):
            chaos.agent_step()
            chaos.stop()


def test_a_pass_places_at_most_its_limit_and_the_next_goes_on(db: Database) -> None:
    w = make_world(db)
    w.add_node("n1", gpus=8)
    ids = [w.launch(f"i{i}").id for i in range(5)]
    with db.transaction() as s:
        first = gpuaas.schedule_pass(s, now=w.clock.now(), limit=3)
    assert [p.request_id for p in first] == ids[:3]  # queue order
    assert [p.request_id for p in w.schedule()] == ids[3:]


# --- reads do not grow with the pool ------------------------------------------------------------


@contextmanager
def _reads(s: Session) -> Iterator[list[int]]:
    """Work the database did inside the block: tuples read from gpuaas tables (PostgreSQL,
    this transaction's statistics) or virtual machine steps (SQLite)."""
    out = [0]
    if s.get_bind().dialect.name == "postgresql":
        q = text("SELECT coalesce(sum(coalesce(seq_tup_read, 0) + coalesce(idx_tup_fetch, 0)), 0)"
                 " FROM pg_stat_xact_user_tables WHERE relname LIKE 'gpuaas_%'")
        before = int(s.scalar(q) or 0)
        yield out
        out[0] = int(s.scalar(q) or 0) - before
        return
    raw = s.connection().connection.dbapi_connection
    steps = [0]

    def tick() -> int:
        steps[0] += 1
        return 0
    raw.set_progress_handler(tick, 100)  # type: ignore[union-attr]
    try:
        yield out
    finally:
        raw.set_progress_handler(None, 0)  # type: ignore[union-attr]
        out[0] = steps[0]


def _grow_pool(db: Database, first: int, n: int) -> None:
    """Add ``n`` ready nodes of 8 H100 directly (setup only: the capacity is then rebuilt)."""
    now = T0
    with db.transaction() as s:
        for i in range(first, first + n):
            s.add(NodeModel(id=f"node_bulk{i:05d}", name=f"bulk{i:05d}", state="ready",
                            labels={}, inventory_source="static", simulated=True,
                            state_reason="", last_heartbeat_at=now, created_at=now))
        s.flush()
        s.add_all(GpuModel(id=f"gpu_bulk{i:05d}_{k}", node_id=f"node_bulk{i:05d}", index=k,
                           model="H100", name="sim", memory_gib=80, healthy=True,
                           health_detail="")
                  for i in range(first, first + n) for k in range(8))
        s.flush()
        capacity.refresh(s, [f"node_bulk{i:05d}" for i in range(first, first + n)])


def _launch_and_pass_reads(w: World) -> tuple[int, int]:
    with w.db.transaction() as s, _reads(s) as launch:
        inst = gpuaas.launch(s, gpuaas.InstanceLaunch(name="r", instance_type="gpu.h100.2x"),
                             who=w.who, actor=ADMIN, idempotency_key=None,
                             now=w.clock.now())
    with w.db.transaction() as s, _reads(s) as placing:
        [placed] = gpuaas.schedule_pass(s, now=w.clock.now())
    assert placed.request_id == inst.id
    return launch[0], placing[0]


def test_admission_and_a_pass_read_as_much_with_400_nodes_as_with_20(db: Database) -> None:
    w = make_world(db)
    w.add_node("real", gpus=8)
    _grow_pool(db, 0, 19)
    small = _launch_and_pass_reads(w)
    _grow_pool(db, 19, 381)
    big = _launch_and_pass_reads(w)
    # The previous design rebuilt every node: 20x the pool read 20x as much.
    assert big[0] <= small[0] * 1.5 + 50, (small, big)
    assert big[1] <= small[1] * 1.5 + 50, (small, big)


def test_two_passes_at_once_place_each_instance_once(db: Database) -> None:
    """The second pass waits for the first (the placement lock), then reads the capacity the
    first committed: it hands out nothing twice and leaves what no longer fits queued."""
    w = make_world(db)
    w.add_node("n1", gpus=4)
    ids = [w.launch(f"i{i}", "gpu.h100.2x").id for i in range(3)]

    def first(s: Session) -> None:
        assert [p.request_id for p in gpuaas.schedule_pass(s, now=w.clock.now())] == ids[:2]

    def second() -> int:
        with db.transaction() as s:
            return len(gpuaas.schedule_pass(s, now=w.clock.now()))
    assert second_waits_for_first(db, first, second) == 0
    assert w.get(ids[2]).state == "admitted"
    _assert_true(db, "two passes")
    with db.transaction() as s:
        assert sum(g.instance_id is not None for g in gpuaas.list_nodes(s)[0].gpus) == 4


def test_listing_nodes_takes_as_many_queries_for_40_nodes_as_for_4(db: Database) -> None:
    """The node list loaded each node's GPUs and holders with two queries per node."""
    w = make_world(db)
    w.add_node("real", gpus=2)
    w.launch("a")
    w.schedule()
    _grow_pool(db, 0, 3)

    def queries() -> tuple[int, int]:
        count = [0]

        def tick(*_: object) -> None:
            count[0] += 1
        event.listen(db.engine, "before_cursor_execute", tick)
        try:
            with db.transaction() as s:
                nodes = gpuaas.list_nodes(s)
        finally:
            event.remove(db.engine, "before_cursor_execute", tick)
        assert sum(g.instance_id is not None for n in nodes for g in n.gpus) == 1
        return count[0], len(nodes)
    small = queries()
    _grow_pool(db, 3, 36)
    big = queries()
    assert (small[1], big[1]) == (4, 40)
    assert big[0] == small[0], (small, big)
