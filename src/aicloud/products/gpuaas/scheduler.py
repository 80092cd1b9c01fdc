"""The placement pass: read the queue and the free capacity from the database, place what
fits, persist the placements.

Level-triggered: each pass decides from what the database holds now (the maintained free
counts of ``gpuaas_node_capacity``, see capacity.py, and the queue), so a crashed or
duplicated scheduler converges. Its cost follows what it places, not the size of the pool:

- the queue is read per GPU model in queue order, a page at a time, and merged by
  (priority, FIFO); a model whose head does not fit stops being read (head-of-line);
- best fit (:class:`~aicloud.products.gpuaas.placement.BestFit`) reads nodes bucket by bucket
  of free count from an index, only as far as the requests need;
- the GPU indices of the chosen nodes are read once, at the end, from the GPU rows.

Passes are serialized by a transaction-scoped advisory lock on PostgreSQL (SQLite serializes
writers); the primary key of ``gpuaas_gpu_assignments`` on the GPU is the second guard
against handing one GPU out twice.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select, text
from sqlalchemy.orm import Session, load_only

from aicloud.platform import audit
from aicloud.products.gpuaas import capacity
from aicloud.products.gpuaas.instances import switch_instance_status
from aicloud.products.gpuaas.lifecycle import GPU_HOLDING_STATES, InstanceState
from aicloud.products.gpuaas.models import (
    GpuAssignmentModel,
    GpuModel,
    InstanceModel,
    NodeModel,
)
from aicloud.products.gpuaas.placement import (
    BestFit,
    GpuSlot,
    NodeCapacity,
    NodeState,
    Placement,
    PlacementEngine,
    PlacementRequest,
    Rejected,
    never_fits,
)
from aicloud.shared.db import bulk

SCHEDULER_LOCK = 0x6770_7561_6173  # "gpuaas"
SCHEDULER = audit.Actor.system("gpuaas-scheduler")
# One pass places at most this many (its transaction holds the placement lock meanwhile);
# the next pass goes on.
MAX_PLACEMENTS_PER_PASS = 1000
QUEUE_PAGE = 500  # queue rows per read


def lock_placements(session: Session) -> None:
    """Serialize with scheduler passes until the transaction ends (PostgreSQL; SQLite admits
    one writer at a time anyway). Taken by the pass and by whatever takes nodes out of
    placement (cordon, drain, down), so a pass never commits a placement on a node that
    left placement while the pass ran: the change waits for the pass and then sees (and
    handles) its placements, or the pass starts after the change and sees it."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": SCHEDULER_LOCK})


def build_engine(session: Session, *, with_queue: bool = False) -> PlacementEngine:
    """The whole placement state as an in-memory engine, rebuilt from the nodes, GPUs and
    instances: O(nodes + GPUs + instances). Passes and admission no longer use it (they read
    ``gpuaas_node_capacity``); it is the reference they are checked and measured against."""
    gpus: dict[str, list[GpuModel]] = {}
    for g in session.scalars(select(GpuModel)):
        gpus.setdefault(g.node_id, []).append(g)
    engine = PlacementEngine()
    for node in session.scalars(select(NodeModel).order_by(NodeModel.id)):
        engine.upsert_node(NodeCapacity(node.id, NodeState(node.state), tuple(
            GpuSlot(g.index, g.model, g.healthy) for g in gpus.get(node.id, ()))))
    holding = session.scalars(select(InstanceModel).where(
        InstanceModel.state.in_([s.value for s in GPU_HOLDING_STATES]),
        InstanceModel.node_id.is_not(None)))
    for inst in holding:
        engine.restore(Placement(inst.id, inst.node_id or "", inst.gpu_model,
                                 tuple(inst.gpu_indices or ())))
    if with_queue:
        for inst in _queue(session):
            engine.submit(PlacementRequest(inst.id, inst.gpu_model, inst.gpu_count,
                                           inst.priority))
    return engine


def _queue(session: Session) -> list[InstanceModel]:
    return list(session.scalars(select(InstanceModel).where(
        InstanceModel.state == InstanceState.ADMITTED.value).order_by(
        InstanceModel.priority.desc(), InstanceModel.queue_order, InstanceModel.id)))


@dataclass(frozen=True)
class _Queued:
    key: tuple[int, int, str]  # (-priority, queue_order, id): the queue order
    request: PlacementRequest


def _model_queue(session: Session, model: str, largest: int, blocked: set[str],
                 page: int) -> Iterator[_Queued]:
    """The admitted instances of ``model`` that could ever fit, in queue order, read a page
    at a time (index ``ix_gpuaas_instances_queue``) until the model is blocked."""
    i = InstanceModel
    after: tuple[int, int, str] | None = None
    size = 16  # small first: a blocked head ends the read after one page
    while model not in blocked:
        stmt = select(i.id, i.gpu_count, i.priority, i.queue_order).where(
            i.state == InstanceState.ADMITTED.value, i.gpu_model == model,
            i.gpu_count <= largest)
        if after is not None:
            p, q, last = after
            stmt = stmt.where((i.priority < p) | ((i.priority == p) & (
                (i.queue_order > q) | ((i.queue_order == q) & (i.id > last)))))
        rows = session.execute(stmt.order_by(i.priority.desc(), i.queue_order, i.id)
                               .limit(size)).all()
        for inst_id, count, priority, order in rows:
            if model in blocked:
                return
            yield _Queued((-priority, order, inst_id),
                          PlacementRequest(inst_id, model, count, priority))
        if len(rows) < size:
            return
        after = (rows[-1].priority, rows[-1].queue_order, rows[-1].id)
        size = min(size * 2, page)


def _never_fitting(session: Session, models: list[str]) -> tuple[dict[str, int],
                                                                 dict[str, Rejected]]:
    """The largest node per queued model, and the queued instances that can no longer fit
    any node (the nodes that could hold them were removed or shrunk)."""
    largest = {m: capacity.largest_installed(session, m) for m in models}
    rejected: dict[str, Rejected] = {}
    for model, most in largest.items():
        rows = session.execute(select(InstanceModel.id, InstanceModel.gpu_count).where(
            InstanceModel.state == InstanceState.ADMITTED.value,
            InstanceModel.gpu_model == model, InstanceModel.gpu_count > most))
        for inst_id, count in rows:
            why = never_fits(PlacementRequest(inst_id, model, count), most,
                             lambda: capacity.known_models(session))
            if why is not None:
                rejected[inst_id] = why
    return largest, rejected


FreeGpus = dict[tuple[str, str], list[tuple[int, str]]]


def _free_indices(session: Session, nodes: set[str]) -> FreeGpus:
    """(node, model) -> its free placeable GPUs now, as (index, GPU id), lowest index first."""
    g, a, n = GpuModel, GpuAssignmentModel, NodeModel
    free: FreeGpus = {}
    ids = sorted(nodes)
    for start in range(0, len(ids), 500):
        rows = session.execute(
            select(g.node_id, g.model, g.index, g.id).join(n, n.id == g.node_id)
            .outerjoin(a, a.gpu_id == g.id)
            .where(bulk.in_values(g.node_id, "ids"), g.healthy,
                   n.state == NodeState.READY.value, a.gpu_id.is_(None))
            .order_by(g.node_id, g.index), {"ids": ids[start:start + 500]})
        for node_id, model, index, gpu_id in rows:
            free.setdefault((node_id, model), []).append((index, gpu_id))
    return free


def schedule_pass(session: Session, *, now: datetime, backfill: bool = False,
                  limit: int = MAX_PLACEMENTS_PER_PASS) -> list[Placement]:
    """Place admitted instances that fit, in queue order (at most ``limit``); reject those
    that can never fit any more. Head-of-line per model unless ``backfill``."""
    lock_placements(session)
    models = list(session.scalars(select(InstanceModel.gpu_model).distinct().where(
        InstanceModel.state == InstanceState.ADMITTED.value).order_by(InstanceModel.gpu_model)))
    if not models:
        return []
    largest, rejected = _never_fitting(session, models)
    fit = BestFit(lambda m, f, after, n: capacity.nodes_with_free(session, m, f, after, n),
                  lambda m: capacity.most_free(session, m))
    blocked: set[str] = set()
    planned: list[tuple[PlacementRequest, str]] = []
    queues = [_model_queue(session, m, largest[m], blocked, QUEUE_PAGE) for m in models
              if largest[m] > 0]
    for queued in heapq.merge(*queues, key=lambda q: q.key):
        if len(planned) >= limit:
            break
        request = queued.request
        if request.model in blocked:
            continue
        node_id = fit.take(request.model, request.count)
        if node_id is None:
            if not backfill:
                blocked.add(request.model)  # later requests of the model wait behind it
            continue
        planned.append((request, node_id))
    # The GPUs themselves, read now: the free counts said how many; a GPU that turned
    # unhealthy since (heartbeats do not wait for passes) leaves its request queued.
    free = _free_indices(session, {node_id for _, node_id in planned})
    chosen: dict[str, Placement] = {}
    gpu_ids: dict[str, list[str]] = {}
    for request, node_id in planned:
        left = free.get((node_id, request.model), [])
        if len(left) < request.count:
            continue
        taken, free[node_id, request.model] = left[:request.count], left[request.count:]
        chosen[request.request_id] = Placement(request.request_id, node_id, request.model,
                                               tuple(index for index, _ in taken))
        gpu_ids[request.request_id] = [gpu_id for _, gpu_id in taken]
    if not chosen and not rejected:
        return []
    # Lock what will be written, in id order (like every multi-row locker of instances),
    # before any write: one cancelled meanwhile is waited for and then no longer matches
    # (PostgreSQL re-checks the state of a row it waited for), so it is skipped instead of
    # being written back to "scheduled" from a stale read.
    i = InstanceModel
    locked = {inst.id: inst for inst in session.scalars(
        select(i).where(bulk.in_values(i.id, "ids"), i.state == InstanceState.ADMITTED.value)
        # What the status switch reads; the rest stays unloaded (it is only written).
        .options(load_only(i.id, i.state, i.state_changed_at, i.scope_path, i.node_id,
                           i.hold_id))
        .order_by(i.id).with_for_update()
        .execution_options(populate_existing=True),
        {"ids": sorted(chosen.keys() | rejected.keys())})}
    for inst_id, why in rejected.items():
        if (inst := locked.get(inst_id)) is not None:
            switch_instance_status(session, inst, InstanceState.REJECTED, actor=SCHEDULER,
                                   at=now, reason=f"can no longer be placed: {why.reason}")
    placed = [p for p in chosen.values() if p.request_id in locked]
    bulk.insert_columns(session.connection(), GpuAssignmentModel.__table__, {
        "gpu_id": [g for p in placed for g in gpu_ids[p.request_id]],
        "instance_id": [p.request_id for p in placed for _ in p.gpu_indices]})
    capacity.touch(session, *{p.node_id for p in placed})
    for p in placed:
        inst = locked[p.request_id]
        inst.node_id, inst.gpu_indices = p.node_id, list(p.gpu_indices)
        switch_instance_status(
            session, inst, InstanceState.SCHEDULED, actor=SCHEDULER, at=now, flush=False,
            reason=f"placed on node {p.node_id}, GPUs {','.join(map(str, p.gpu_indices))}")
    session.flush()
    return placed
