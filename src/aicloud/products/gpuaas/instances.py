"""Instances: the one status mutator, launch with admission, stop, and the read side.

Every state change goes through :func:`switch_instance_status`, which checks the edge with
the lifecycle state machine, writes the transition row and the audit event in the caller's
transaction, and, when the instance ends, frees its GPUs and releases its billing hold.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from aicloud.platform import audit, billing
from aicloud.products.gpuaas import capacity
from aicloud.products.gpuaas.lifecycle import (
    GPU_HOLDING_STATES,
    ON_NODE_STATES,
    TERMINAL_STATES,
    InstanceState,
    transition,
)
from aicloud.products.gpuaas.models import (
    GpuAssignmentModel,
    InstanceModel,
    TransitionModel,
)
from aicloud.products.gpuaas.schemas import Instance, InstanceTransition
from aicloud.shared.clock import utcnow
from aicloud.shared.errors import NotFound
from aicloud.shared.ids import new_id

S = InstanceState
# Instances that count against quotas: everything admitted and not yet ended.
ACTIVE_STATES = frozenset(S) - TERMINAL_STATES


def switch_instance_status(session: Session, inst: InstanceModel, target: InstanceState, *,
                           reason: str, actor: audit.Actor, at: datetime | None = None,
                           flush: bool = True) -> TransitionModel:
    """Move ``inst`` to ``target`` (raises IllegalTransition for an edge that does not exist).
    ``flush=False`` leaves the writes to the caller's next flush, so a caller moving many
    instances (a scheduler pass) sends them in batches instead of a round trip each."""
    at = at or utcnow()
    current = InstanceState(inst.state)
    step = transition(current, target, reason=reason, at=max(at, inst.state_changed_at))
    row = TransitionModel(id=new_id("itr"), instance_id=inst.id, from_state=current.value,
                          to_state=target.value, reason=reason[:512], at=step.at)
    session.add(row)
    inst.state, inst.state_reason, inst.state_changed_at = target.value, reason[:512], step.at
    if target in TERMINAL_STATES:
        inst.ended_at = step.at
        _release_resources(session, inst, actor=actor, at=step.at)
    elif target not in GPU_HOLDING_STATES and current in GPU_HOLDING_STATES:
        _free_gpus(session, inst)  # a requeue (scheduled -> admitted) gives the GPUs back
    if flush:
        session.flush()
    audit.record(session, actor=actor, action=f"gpuaas.instance.{target.value}",
                 target_type="instance", target_id=inst.id, scope_path=inst.scope_path,
                 changes=audit.diff({"state": current.value}, {"state": target.value}),
                 details={"reason": reason, "node_id": inst.node_id})
    return row


def _free_gpus(session: Session, inst: InstanceModel) -> None:
    session.execute(delete(GpuAssignmentModel).where(GpuAssignmentModel.instance_id == inst.id))
    capacity.touch(session, inst.node_id)


def _release_resources(session: Session, inst: InstanceModel, *, actor: audit.Actor,
                       at: datetime) -> None:
    _free_gpus(session, inst)
    if inst.hold_id is None:
        return
    hold = billing.get_hold(session, inst.hold_id)
    if hold.status == "pending" and hold.expires_at > at:
        # The minimum billable period was reserved, not charged: usage records carry the
        # real charge, so the reservation is released rather than posted.
        billing.void_hold(session, actor=actor, hold_id=inst.hold_id, now=at)


def create_instance_row(session: Session, inst: InstanceModel, *, actor: audit.Actor,
                        at: datetime) -> None:
    """Store a new instance in ``requested`` with its first transition row."""
    inst.state, inst.state_reason, inst.state_changed_at = S.REQUESTED.value, "requested", at
    session.add(inst)
    session.add(TransitionModel(id=new_id("itr"), instance_id=inst.id, from_state=None,
                                to_state=S.REQUESTED.value, reason="requested", at=at))
    session.flush()
    audit.record(session, actor=actor, action="gpuaas.instance.launch", target_type="instance",
                 target_id=inst.id, scope_path=inst.scope_path,
                 changes=audit.diff(None, {"name": inst.name, "type": inst.instance_type,
                                           "template": inst.template}))


# --- reading ---------------------------------------------------------------------------------


def get_instance_model(session: Session, instance_id: str, *,
                       for_update: bool = False) -> InstanceModel:
    stmt = select(InstanceModel).where(InstanceModel.id == instance_id)
    if for_update:
        stmt = stmt.with_for_update()
    m = session.scalar(stmt)
    if m is None:
        raise NotFound(f"instance {instance_id} not found")
    return m


def queue_position(session: Session, inst: InstanceModel) -> int | None:
    """1-based place among admitted instances of the same GPU model (priority, then FIFO)."""
    if inst.state != S.ADMITTED.value:
        return None
    ahead = session.scalar(select(func.count()).select_from(InstanceModel).where(
        InstanceModel.state == S.ADMITTED.value, InstanceModel.gpu_model == inst.gpu_model,
        (InstanceModel.priority > inst.priority)
        | ((InstanceModel.priority == inst.priority)
           & ((InstanceModel.queue_order < inst.queue_order)
              | ((InstanceModel.queue_order == inst.queue_order)
                 & (InstanceModel.id < inst.id))))))
    return int(ahead or 0) + 1


def instance_view(session: Session, m: InstanceModel, *, history: bool = True) -> Instance:
    transitions = []
    if history:
        transitions = [InstanceTransition(from_state=t.from_state, to_state=t.to_state,
                                          reason=t.reason, at=t.at)
                       for t in session.scalars(select(TransitionModel).where(
                           TransitionModel.instance_id == m.id).order_by(
                           TransitionModel.at, TransitionModel.id))]
    return Instance(
        id=m.id, name=m.name, project_id=m.project_id, scope_path=m.scope_path,
        created_by=m.created_by, instance_type=m.instance_type, gpu_model=m.gpu_model,
        gpu_count=m.gpu_count, vcpus=m.vcpus, memory_gib=m.memory_gib, template=m.template,
        priority=m.priority, state=m.state, state_reason=m.state_reason,
        state_changed_at=m.state_changed_at, queue_position=queue_position(session, m),
        node_id=m.node_id, gpu_indices=m.gpu_indices, endpoint_url=m.endpoint_url,
        stop_reason=m.stop_reason, started_at=m.started_at, ended_at=m.ended_at,
        exit_code=m.exit_code, created_at=m.created_at, transitions=transitions)


def get_instance(session: Session, instance_id: str) -> Instance:
    return instance_view(session, get_instance_model(session, instance_id))


def list_instances(session: Session, *, project_id: str, after: str | None = None,
                   limit: int = 50) -> list[Instance]:
    stmt = (select(InstanceModel).where(InstanceModel.project_id == project_id)
            .order_by(InstanceModel.id).limit(limit))
    if after:
        stmt = stmt.where(InstanceModel.id > after)
    return [instance_view(session, m, history=False) for m in session.scalars(stmt)]


def gpus_in_use(session: Session, scope_path: str, gpu_model: str | None) -> int:
    """GPUs of active instances at or below ``scope_path`` (all models when None)."""
    stmt = select(func.coalesce(func.sum(InstanceModel.gpu_count), 0)).where(
        InstanceModel.state.in_([s.value for s in ACTIVE_STATES]),
        (InstanceModel.scope_path == scope_path)
        | InstanceModel.scope_path.startswith(scope_path.rstrip("/") + "/"))
    if gpu_model is not None:
        stmt = stmt.where(InstanceModel.gpu_model == gpu_model)
    return int(session.scalar(stmt) or 0)


def request_stop(session: Session, instance_id: str, *, reason: str, actor: audit.Actor,
                 now: datetime) -> InstanceModel:
    """Stop an instance: one not on a node yet is cancelled at once; one on a node is marked
    and its agent stops it (the reason is kept and shown). Stopping twice is a no-op."""
    inst = get_instance_model(session, instance_id, for_update=True)
    state = InstanceState(inst.state)
    if state in TERMINAL_STATES or inst.stop_requested_at is not None:
        return inst
    inst.stop_requested_at, inst.stop_reason = now, reason[:512]
    if state in (S.REQUESTED, S.ADMITTED, S.SCHEDULED):
        switch_instance_status(session, inst, S.STOPPED, reason=f"cancelled: {reason}",
                               actor=actor, at=now)
    else:
        audit.record(session, actor=actor, action="gpuaas.instance.stop_request",
                     target_type="instance", target_id=inst.id, scope_path=inst.scope_path,
                     details={"reason": reason})
    session.flush()
    return inst


def live_instances(session: Session, scope_path: str) -> list[InstanceModel]:
    """Instances at or below ``scope_path`` that are not ended: queued ones hold a billing
    hold, placed ones hold GPUs, those on a node run (and bill). What blocks deleting a scope."""
    return list(session.scalars(select(InstanceModel).where(
        InstanceModel.state.in_([s.value for s in ACTIVE_STATES]),
        (InstanceModel.scope_path == scope_path)
        | InstanceModel.scope_path.startswith(scope_path.rstrip("/") + "/"))
        .order_by(InstanceModel.id)))


def stop_scope(session: Session, scope_path: str, *, reason: str, actor: audit.Actor,
               now: datetime) -> list[str]:
    """Stop every active instance at or below ``scope_path`` (budget or wallet exhausted)."""
    # All rows locked up front, in id order, before the first write (and its audit record):
    # taking them one by one while holding the audit chain's lock could deadlock with a
    # scheduler pass or a monitor that holds some of them and waits for that lock.
    ids = list(session.scalars(select(InstanceModel.id).where(
        InstanceModel.state.in_([s.value for s in ACTIVE_STATES]),
        InstanceModel.stop_requested_at.is_(None),
        (InstanceModel.scope_path == scope_path)
        | InstanceModel.scope_path.startswith(scope_path.rstrip("/") + "/"))
        .order_by(InstanceModel.id).with_for_update()))
    for instance_id in ids:
        request_stop(session, instance_id, reason=reason, actor=actor, now=now)
    return ids


def wallets_in_use(session: Session) -> dict[tuple[str, str], list[str]]:
    """(org id, currency) of the wallets paying for instances on nodes now, each with the
    admission holds of those instances (their holds name the currency; instances without a
    hold are not priced)."""
    rows = session.execute(select(InstanceModel.org_id, InstanceModel.hold_id).where(
        InstanceModel.state.in_([s.value for s in ON_NODE_STATES]),
        InstanceModel.stop_requested_at.is_(None), InstanceModel.hold_id.is_not(None)))
    found: dict[tuple[str, str], list[str]] = {}
    for org_id, hold_id in rows:
        found.setdefault((org_id, billing.get_hold(session, hold_id).currency),
                         []).append(hold_id)
    return dict(sorted(found.items()))
