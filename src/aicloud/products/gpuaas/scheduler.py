"""The placement pass: rebuild the placement engine from the database, place what fits,
persist the placements.

Level-triggered: each pass reads the whole truth (nodes, GPUs, assignments, the queue) and
makes decisions from it, so a crashed or duplicated scheduler converges. Passes are
serialized by a transaction-scoped advisory lock on PostgreSQL (SQLite serializes writers);
the primary key of ``gpuaas_gpu_assignments`` on the GPU is the second guard against
handing one GPU out twice.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select, text
from sqlalchemy.orm import Session

from aicloud.platform import audit
from aicloud.products.gpuaas.instances import switch_instance_status
from aicloud.products.gpuaas.lifecycle import GPU_HOLDING_STATES, InstanceState
from aicloud.products.gpuaas.models import (
    GpuAssignmentModel,
    GpuModel,
    InstanceModel,
    NodeModel,
)
from aicloud.products.gpuaas.placement import (
    GpuSlot,
    NodeCapacity,
    NodeState,
    Placement,
    PlacementEngine,
    PlacementRequest,
    Rejected,
)

SCHEDULER_LOCK = 0x6770_7561_6173  # "gpuaas"
SCHEDULER = audit.Actor.system("gpuaas-scheduler")


def lock_placements(session: Session) -> None:
    """Serialize with scheduler passes until the transaction ends (PostgreSQL; SQLite admits
    one writer at a time anyway). Taken by the pass and by whatever takes nodes out of
    placement (cordon, drain, down), so a pass never commits a placement on a node that
    left placement while the pass ran: the change waits for the pass and then sees (and
    handles) its placements, or the pass starts after the change and sees it."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": SCHEDULER_LOCK})


def build_engine(session: Session, *, with_queue: bool = False) -> PlacementEngine:
    """The placement engine as the database describes it now."""
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


def _queue(session: Session, *, lock: bool = False) -> list[InstanceModel]:
    if lock:
        # Row-lock the queue (in id order, like every multi-row locker of instances) before
        # any write: a cancel that commits meanwhile is waited for and its row drops out
        # (PostgreSQL re-checks the state of a row it waited for), instead of being written
        # back to "scheduled" from a stale read.
        session.execute(select(InstanceModel.id).where(
            InstanceModel.state == InstanceState.ADMITTED.value)
            .order_by(InstanceModel.id).with_for_update())
    return list(session.scalars(select(InstanceModel).where(
        InstanceModel.state == InstanceState.ADMITTED.value).order_by(
        InstanceModel.priority.desc(), InstanceModel.queue_order, InstanceModel.id)
        .execution_options(populate_existing=True)))


def schedule_pass(session: Session, *, now: datetime) -> list[Placement]:
    """Place every admitted instance that fits; reject those that can never fit any more."""
    lock_placements(session)
    queued = {i.id: i for i in _queue(session, lock=True)}
    if not queued:
        return []
    engine = build_engine(session)
    for inst in queued.values():
        outcome = engine.submit(PlacementRequest(inst.id, inst.gpu_model, inst.gpu_count,
                                                 inst.priority))
        if isinstance(outcome, Rejected):  # the nodes that could hold it are gone
            switch_instance_status(session, inst, InstanceState.REJECTED, actor=SCHEDULER,
                                   at=now, reason=f"can no longer be placed: {outcome.reason}")
    placed = engine.schedule()
    gpu_ids = {(g.node_id, g.index): g.id for g in session.scalars(select(GpuModel).where(
        GpuModel.node_id.in_({p.node_id for p in placed})))} if placed else {}
    for p in placed:
        inst = queued[p.request_id]
        inst.node_id, inst.gpu_indices = p.node_id, list(p.gpu_indices)
        session.add_all(GpuAssignmentModel(gpu_id=gpu_ids[(p.node_id, i)], instance_id=inst.id)
                        for i in p.gpu_indices)
        switch_instance_status(
            session, inst, InstanceState.SCHEDULED, actor=SCHEDULER, at=now,
            reason=f"placed on node {p.node_id}, GPUs {','.join(map(str, p.gpu_indices))}")
    return placed
