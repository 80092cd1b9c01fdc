"""Placement through the database: admission and scheduler passes on a pool of 10,000 nodes
x 8 H100 (half of them partly busy), on SQLite and PostgreSQL.

Ours reads the maintained free capacity (``gpuaas_node_capacity``, see capacity.py). The
baseline, on the same data in the same run, is the previous design: every admission and
every pass rebuilds the whole placement engine from nodes, GPUs and instances
(``gpuaas.build_engine``), then decides in memory.

1. Admission p50: ``gpuaas.launch`` (type, quota, budget, wallet hold, never-fits) in its own
   committed transaction, launch -> admitted. Baseline: the same launch plus the rebuild the
   old admission did for its never-fits check.
2. Scheduler: a queue of pending (admitted) instances of mixed sizes (1, 1, 1, 2, 2, 4, 8
   GPUs) placed by passes, each committed, until the queue is empty: placements/s. The
   queue is written in bulk (only placing is timed). Baseline: the previous pass (rebuild,
   submit the queue, place, write), same queue, same starting state.
3. One placement per pass (a launch arriving at an idle scheduler): pass latency p50.
4. The pure engine in memory (1,000 nodes, 10,000 requests): best fit against a naive first
   fit, throughput and GPUs left idle under churn (what packing buys).

Sizes: AICLOUD_BENCH_PLACEMENT_NODES (default 10000), AICLOUD_BENCH_PLACEMENT_QUEUE (2000),
AICLOUD_BENCH_PLACEMENT_ADMISSIONS (200); the baseline takes fewer samples when it is slow
(AICLOUD_BENCH_PLACEMENT_BASELINE_SAMPLES, default 5). Targets at 10k nodes: admission p50 <
50 ms, scheduler >= 1,000 placements/s. ``python -m bench bench_placement --runs 3``.
"""

from __future__ import annotations

import os
import random
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TypeVar

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from aicloud.platform import audit, billing, iam
from aicloud.products import gpuaas
from aicloud.products.gpuaas import capacity
from aicloud.products.gpuaas.models import (
    GpuAssignmentModel,
    GpuModel,
    InstanceModel,
    NodeModel,
)
from aicloud.products.gpuaas.scheduler import lock_placements
from aicloud.runtime import gpuaas as gpuaas_runtime
from aicloud.shared.db import Database
from aicloud.shared.ids import new_id
from bench.dbs import each_database
from bench.harness import Measurement

T = TypeVar("T")
N_POOL = int(os.environ.get("AICLOUD_BENCH_PLACEMENT_NODES", "10000"))
N_QUEUE = int(os.environ.get("AICLOUD_BENCH_PLACEMENT_QUEUE", "2000"))
N_ADMIT = int(os.environ.get("AICLOUD_BENCH_PLACEMENT_ADMISSIONS", "200"))
N_BASELINE = int(os.environ.get("AICLOUD_BENCH_PLACEMENT_BASELINE_SAMPLES", "5"))
N_SINGLE = 50
GPUS_PER_NODE = 8
SIZES = (1, 1, 1, 2, 2, 4, 8)
ACTOR = audit.Actor.system("bench")
NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


# --- the data ----------------------------------------------------------------------------------


@dataclass
class Pool:
    db: Database
    who: gpuaas.Requester
    queue: list[str] = field(default_factory=list)
    seq: int = 0

    def instance_row(self, *, count: int, state: str, node_id: str | None = None,
                     indices: list[int] | None = None) -> dict[str, object]:
        self.seq += 1
        return {
            "id": new_id("inst"), "name": f"b{self.seq}", "org_id": self.who.org_id,
            "project_id": self.who.project_id, "scope_path": self.who.scope_path,
            "created_by": self.who.principal_id, "instance_type": f"gpu.h100.{count}x",
            "gpu_model": "H100", "gpu_count": count, "vcpus": 16 * count,
            "memory_gib": 128 * count, "template": "shell", "priority": 0,
            "queue_order": self.seq, "state": state, "state_reason": "bench",
            "state_changed_at": NOW, "node_id": node_id, "gpu_indices": indices,
            "created_at": NOW}


def _make_pool(db: Database) -> Pool:
    """N_POOL nodes x 8 H100; every other node runs one instance of 1, 2 or 4 GPUs."""
    gpuaas_runtime.prepare_meters_and_prices(db, seed_prices=True)
    with db.transaction() as s:
        org = iam.create_org(s, "bench", actor=ACTOR)
        prj = iam.create_project(s, name="bench", org_id=org.id, actor=ACTOR)
        billing.top_up(s, actor=ACTOR, org_id=org.id, amount=10**15, currency="USD",
                       idempotency_key="bench")
        pool = Pool(db, gpuaas.Requester(principal_id="user_bench", org_id=org.id,
                                         project_id=prj.id,
                                         scope_path=iam.scope_path(s, prj.id)))
    rnd = random.Random(3)
    nodes, gpus, running, held = [], [], [], []
    for i in range(N_POOL):
        node_id = f"node_{i:06d}"
        nodes.append({"id": node_id, "name": f"host{i:06d}", "state": "ready", "labels": {},
                      "inventory_source": "static", "simulated": True, "state_reason": "bench",
                      "last_heartbeat_at": NOW, "created_at": NOW})
        ids = [new_id("gpu") for _ in range(GPUS_PER_NODE)]
        gpus += [{"id": gid, "node_id": node_id, "index": k, "model": "H100", "name": "H100",
                  "memory_gib": 80, "uuid": None, "healthy": True, "health_detail": ""}
                 for k, gid in enumerate(ids)]
        if i % 2 == 0:
            count = rnd.choice((1, 2, 4))
            row = pool.instance_row(count=count, state="running", node_id=node_id,
                                    indices=list(range(count)))
            running.append(row)
            held += [{"gpu_id": ids[k], "instance_id": row["id"]} for k in range(count)]
    with db.transaction() as s:  # setup, not timed: plain executemany (JSON columns)
        for table, rows in ((NodeModel, nodes), (GpuModel, gpus), (InstanceModel, running),
                            (GpuAssignmentModel, held)):
            for start in range(0, len(rows), 5000):
                s.execute(table.__table__.insert(), rows[start:start + 5000])
        capacity.rebuild(s)
    _analyze(db)
    return pool


def _analyze(db: Database) -> None:
    """Fresh planner statistics after the bulk load (autovacuum would gather them within a
    minute; without them PostgreSQL plans for empty tables)."""
    if db.dialect == "postgresql":
        with db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as c:
            c.exec_driver_sql("ANALYZE")


def _queue(pool: Pool, n: int, seed: int = 7) -> list[str]:
    rnd = random.Random(seed)
    rows = [pool.instance_row(count=rnd.choice(SIZES), state="admitted") for _ in range(n)]
    with pool.db.transaction() as s:
        s.execute(InstanceModel.__table__.insert(), rows)
    if n > 1:
        _analyze(pool.db)
    return [str(r["id"]) for r in rows]


def _requeue(pool: Pool, ids: list[str]) -> None:
    """Put placed instances back in the queue, their GPUs free (the same start again)."""
    with pool.db.transaction() as s:
        for start in range(0, len(ids), 1000):
            part = ids[start:start + 1000]
            s.execute(delete(GpuAssignmentModel).where(GpuAssignmentModel.instance_id.in_(part)))
            s.execute(update(InstanceModel).where(InstanceModel.id.in_(part)).values(
                state="admitted", node_id=None, gpu_indices=None))
        capacity.rebuild(s)


# --- the previous design (the baseline) ------------------------------------------------------


def rebuild_pass(session: Session, *, now: datetime) -> list[gpuaas.Placement]:
    """The scheduler pass before the capacity table: rebuild the engine from every node, GPU
    and placed instance, submit the whole queue, place, write."""
    lock_placements(session)
    session.execute(select(InstanceModel.id).where(InstanceModel.state == "admitted")
                    .order_by(InstanceModel.id).with_for_update())
    queued = {i.id: i for i in session.scalars(
        select(InstanceModel).where(InstanceModel.state == "admitted")
        .order_by(InstanceModel.priority.desc(), InstanceModel.queue_order, InstanceModel.id))}
    if not queued:
        return []
    engine = gpuaas.build_engine(session)
    for inst in queued.values():
        engine.submit(gpuaas.PlacementRequest(inst.id, inst.gpu_model, inst.gpu_count,
                                              inst.priority))
    placed = engine.schedule()
    gpu_ids = {(g.node_id, g.index): g.id for g in session.scalars(select(GpuModel).where(
        GpuModel.node_id.in_({p.node_id for p in placed})))} if placed else {}
    for p in placed:
        inst = queued[p.request_id]
        inst.node_id, inst.gpu_indices = p.node_id, list(p.gpu_indices)
        session.add_all(GpuAssignmentModel(gpu_id=gpu_ids[(p.node_id, i)], instance_id=inst.id)
                        for i in p.gpu_indices)
        gpuaas.switch_instance_status(session, inst, gpuaas.InstanceState.SCHEDULED,
                                      actor=ACTOR, at=now, reason=f"placed on {p.node_id}")
    return placed


def _launch(pool: Pool, i: int, *, rebuild: bool) -> float:
    spec = gpuaas.InstanceLaunch(name=f"a{i}", instance_type="gpu.h100.1x")
    t0 = time.perf_counter()
    with pool.db.transaction() as s:
        if rebuild:  # what the old admission did for its never-fits check
            gpuaas.build_engine(s).never_fits(gpuaas.PlacementRequest("r", "H100", 1))
        inst = gpuaas.launch(s, spec, who=pool.who, actor=ACTOR, idempotency_key=None,
                             now=NOW + timedelta(seconds=i))
    elapsed = time.perf_counter() - t0
    assert inst.state == "admitted", inst.state
    pool.queue.append(inst.id)
    return elapsed


def _drain(pool: Pool, pass_fn: Callable[[Session], list[gpuaas.Placement]]) -> tuple[float, int]:
    placed, t0 = 0, time.perf_counter()
    while True:
        with pool.db.transaction() as s:
            n = len(pass_fn(s))
        placed += n
        if n == 0:
            return time.perf_counter() - t0, placed


def _single(pool: Pool, pass_fn: Callable[[Session], list[gpuaas.Placement]],
            samples: int) -> float:
    """p50 of a pass that places the one instance just queued."""
    times = []
    for i in range(samples):
        [inst_id] = _queue(pool, 1, seed=100 + i)
        t0 = time.perf_counter()
        with pool.db.transaction() as s:
            assert len(pass_fn(s)) == 1
        times.append(time.perf_counter() - t0)
        _requeue(pool, [inst_id])
        with pool.db.transaction() as s:
            s.execute(update(InstanceModel).where(InstanceModel.id == inst_id)
                      .values(state="stopped"))
    return statistics.median(times)


def _through_database(dialect: str, db: Database) -> list[Measurement]:
    pool = _make_pool(db)
    size = f"{N_POOL:,} nodes x {GPUS_PER_NODE}, {dialect}"

    def ours_pass(s: Session) -> list[gpuaas.Placement]:
        return gpuaas.schedule_pass(s, now=NOW)

    def old_pass(s: Session) -> list[gpuaas.Placement]:
        return rebuild_pass(s, now=NOW)

    queue = _queue(pool, N_QUEUE)
    t_ours, n_ours = _drain(pool, ours_pass)
    _requeue(pool, queue)
    t_old, n_old = _drain(pool, old_pass)
    assert n_ours == n_old == N_QUEUE, (n_ours, n_old)
    _requeue(pool, queue)
    with db.transaction() as s:  # the queue leaves; the next measurements start empty
        s.execute(update(InstanceModel).where(InstanceModel.state == "admitted")
                  .values(state="stopped"))
    single_ours = _single(pool, ours_pass, N_SINGLE)
    single_old = _single(pool, old_pass, N_BASELINE)
    with db.transaction() as s:
        assert capacity.drift(s) == {}, "the maintained capacity drifted"
    admit_ours = statistics.median(_launch(pool, i, rebuild=False) for i in range(N_ADMIT))
    admit_old = statistics.median(_launch(pool, N_ADMIT + i, rebuild=True)
                                  for i in range(N_BASELINE))
    return [
        Measurement(f"admission p50 (launch -> admitted, committed), {size}",
                    admit_ours * 1000, "ms", "rebuild-per-launch engine", admit_old * 1000,
                    higher_is_better=False, target="< 50 ms at 10k nodes"),
        Measurement(f"scheduler: drain a queue of {N_QUEUE:,} (passes committed), {size}",
                    n_ours / t_ours, "placements/s", "rebuild-per-pass engine", n_old / t_old,
                    target=">= 1,000/s at 10k nodes"),
        Measurement(f"scheduler: a pass placing one new instance, p50, {size}",
                    single_ours * 1000, "ms", "rebuild-per-pass engine", single_old * 1000,
                    higher_is_better=False),
    ]


# --- the pure engine in memory ---------------------------------------------------------------

N_NODES, N_REQUESTS, REPEAT, CHURN = 1_000, 10_000, 3, 250


def _nodes() -> list[gpuaas.NodeCapacity]:
    gpus = tuple(gpuaas.GpuSlot(i, "H100") for i in range(GPUS_PER_NODE))
    return [gpuaas.NodeCapacity(f"node{i:05d}", gpuaas.NodeState.READY, gpus)
            for i in range(N_NODES)]


def _requests(seed: int = 7) -> list[gpuaas.PlacementRequest]:
    rnd = random.Random(seed)
    return [gpuaas.PlacementRequest(f"req{i:06d}", "H100", rnd.choice(SIZES))
            for i in range(N_REQUESTS)]


@dataclass
class _NaiveNode:
    node_id: str
    free: list[int] = field(default_factory=lambda: list(range(GPUS_PER_NODE)))


def naive_first_fit(nodes: list[gpuaas.NodeCapacity],
                    requests: list[gpuaas.PlacementRequest]) -> int:
    """The textbook baseline: for each request, the first node (in id order) with room."""
    table = [_NaiveNode(n.node_id) for n in sorted(nodes, key=lambda n: n.node_id)]
    allocated = 0
    for request in requests:
        for node in table:
            if len(node.free) >= request.count:
                del node.free[: request.count]
                allocated += request.count
                break
    return allocated


def ours(nodes: list[gpuaas.NodeCapacity], requests: list[gpuaas.PlacementRequest]) -> int:
    engine = gpuaas.PlacementEngine(nodes, backfill=True)
    for request in requests:
        engine.submit(request)
    return sum(len(p.gpu_indices) for p in engine.schedule())


def _ending(running: list[T], rnd: random.Random) -> list[T]:
    """CHURN running placements chosen at random end (removed from ``running``)."""
    rnd.shuffle(running)
    ending = running[-CHURN:]
    del running[-CHURN:]
    return ending


def naive_churn(nodes: list[gpuaas.NodeCapacity],
                requests: list[gpuaas.PlacementRequest]) -> float:
    """First fit with the same head-of-line rule and the same churn as ``ours_churn``."""
    table = [_NaiveNode(n.node_id) for n in sorted(nodes, key=lambda n: n.node_id)]
    queue = list(requests)
    running: list[tuple[_NaiveNode, list[int]]] = []
    rnd = random.Random(11)
    head, idle_sum, passes = 0, 0, 0
    while head < len(queue):
        while head < len(queue):
            request = queue[head]
            for node in table:
                if len(node.free) >= request.count:
                    taken = node.free[: request.count]
                    del node.free[: request.count]
                    running.append((node, taken))
                    break
            else:
                break  # the head does not fit: everything behind it waits
            head += 1
        if head < len(queue):
            idle_sum += sum(len(node.free) for node in table)
            passes += 1
        for node, taken in _ending(running, rnd):
            node.free.extend(taken)
            node.free.sort()
    return idle_sum / max(passes, 1)


def ours_churn(nodes: list[gpuaas.NodeCapacity],
               requests: list[gpuaas.PlacementRequest]) -> float:
    engine = gpuaas.PlacementEngine(nodes)
    for request in requests:
        engine.submit(request)
    running: list[str] = []
    rnd = random.Random(11)
    idle_sum, passes = 0, 0
    while engine.queue_length():
        running += [p.request_id for p in engine.schedule()]
        if engine.queue_length():
            idle_sum += engine.free_gpu_total("H100")
            passes += 1
        for request_id in _ending(running, rnd):
            engine.release(request_id)
    return idle_sum / max(passes, 1)


def _best_time(fn, nodes, requests) -> tuple[float, float]:  # type: ignore[no-untyped-def]
    best, allocated = float("inf"), 0.0
    for _ in range(REPEAT):
        t0 = time.perf_counter()
        allocated = fn(nodes, requests)
        best = min(best, time.perf_counter() - t0)
    return best, allocated


def _in_memory() -> list[Measurement]:
    nodes, requests = _nodes(), _requests()
    t_ours, gpus_ours = _best_time(ours, nodes, requests)
    t_naive, gpus_naive = _best_time(naive_first_fit, nodes, requests)
    t_churn, idle = _best_time(ours_churn, nodes, requests)
    t_churn_naive, idle_naive = _best_time(naive_churn, nodes, requests)
    total = N_NODES * GPUS_PER_NODE
    return [
        Measurement(
            f"in memory: best fit, {N_REQUESTS:,} requests on {N_NODES:,}x{GPUS_PER_NODE} GPUs",
            N_REQUESTS / t_ours, "decisions/s", "naive first-fit scan", N_REQUESTS / t_naive,
        ),
        Measurement(
            "in memory: GPUs allocated by that pass (packing)", gpus_ours, f"of {total} GPUs",
            "naive first-fit scan", gpus_naive,
        ),
        Measurement(
            f"in memory: churn, {CHURN} random ends per pass, GPUs idle while requests wait",
            idle, "GPUs", "naive first-fit scan", idle_naive, higher_is_better=False,
        ),
        Measurement(
            "in memory: churn, time to drain (head-of-line)", N_REQUESTS / t_churn,
            "placements/s", "naive first-fit scan", N_REQUESTS / t_churn_naive,
        ),
    ]


def run() -> list[Measurement]:
    found: list[Measurement] = []
    with each_database() as dbs:
        for dialect, db in dbs:
            found += _through_database(dialect, db)
    return found + _in_memory()


if __name__ == "__main__":
    for m in run():
        print(f"{m.name}: {m.value:,.1f} {m.unit}; {m.baseline_name}: "
              f"{m.baseline_value:,.1f}; ratio {m.ratio:.2f}x")
