"""Nodes and their GPUs: registration and heartbeats from agents, operator state changes
(cordon, drain, uncordon), GPU health, and the monitor that marks silent nodes down."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from aicloud.platform import audit
from aicloud.products.gpuaas import capacity
from aicloud.products.gpuaas.instances import switch_instance_status
from aicloud.products.gpuaas.lifecycle import ON_NODE_STATES, InstanceState
from aicloud.products.gpuaas.models import (
    GpuAssignmentModel,
    GpuModel,
    InstanceModel,
    NodeCredentialModel,
    NodeModel,
)
from aicloud.products.gpuaas.placement import NodeState
from aicloud.products.gpuaas.scheduler import lock_placements
from aicloud.products.gpuaas.schemas import Gpu, Node
from aicloud.shared.errors import Conflict, NotFound
from aicloud.shared.ids import new_id

MONITOR = audit.Actor.system("gpuaas-node-monitor")


@dataclass(frozen=True)
class GpuReport:
    index: int
    model: str
    name: str
    memory_gib: int
    uuid: str | None = None
    healthy: bool = True
    health_detail: str = ""


@dataclass(frozen=True)
class NodeReport:
    """What an agent knows about its host."""

    name: str
    inventory_source: str
    simulated: bool
    gpus: tuple[GpuReport, ...]
    labels: dict[str, str] = field(default_factory=dict)


def _scope() -> str:
    return "/"  # nodes are platform resources


def get_node_model(session: Session, node_id: str) -> NodeModel:
    m = session.get(NodeModel, node_id)
    if m is None:
        raise NotFound(f"node {node_id} not found")
    return m


def node_by_name(session: Session, name: str) -> NodeModel | None:
    return session.scalar(select(NodeModel).where(NodeModel.name == name))


def register_node(session: Session, report: NodeReport, *, actor: audit.Actor,
                  now: datetime, node_id: str | None = None) -> NodeModel:
    """Create the node or refresh it from a new report (agent start or heartbeat). A node
    that was down stays down until :func:`node_reconciled`; GPU health changes are applied at
    once. With ``node_id`` (an agent that joined: its credential names its node) that node is
    refreshed, whatever name the report gives; it must exist."""
    if node_id is not None:
        node = session.scalar(select(NodeModel).where(NodeModel.id == node_id)
                              .with_for_update())
        if node is None:
            raise NotFound(f"node {node_id} not found")
    else:
        node = session.scalar(select(NodeModel).where(NodeModel.name == report.name)
                              .with_for_update())
    if node is None:
        node = NodeModel(id=new_id("node"), name=report.name, state=NodeState.READY.value,
                         labels=dict(report.labels), inventory_source=report.inventory_source,
                         simulated=report.simulated, state_reason="registered by its agent",
                         last_heartbeat_at=now, created_at=now)
        session.add(node)
        session.flush()
        audit.record(session, actor=actor, action="gpuaas.node.register", target_type="node",
                     target_id=node.id, scope_path=_scope(),
                     details={"name": report.name, "gpus": len(report.gpus),
                              "inventory_source": report.inventory_source,
                              "simulated": report.simulated})
    else:
        node.last_heartbeat_at = now
        node.labels = dict(report.labels) or node.labels
        node.inventory_source, node.simulated = report.inventory_source, report.simulated
        # A down node stays down (unschedulable) on its first heartbeats: its GPUs were freed
        # when it went down, but what ran there may still run. Its agent kills that first,
        # then calls node_reconciled (see NodeAgent.heartbeat).
    sync_gpus(session, node, report.gpus, actor=actor)
    return node


def node_reconciled(session: Session, node_id: str, *, killed: list[str],
                    actor: audit.Actor) -> NodeModel:
    """The agent of a down node has heartbeated and killed every workload that should no
    longer run there (``killed``): the node is ready for placements again."""
    node = session.scalar(select(NodeModel).where(NodeModel.id == node_id).with_for_update())
    if node is None:
        raise NotFound(f"node {node_id} not found")
    if node.state == NodeState.DOWN.value:
        set_node_state(session, node, NodeState.READY, "heartbeats resumed; its agent reconciled "
                   f"the node ({len(killed)} leftover workload(s) killed)", actor=actor)
    return node


def sync_gpus(session: Session, node: NodeModel, gpus: tuple[GpuReport, ...], *,
              actor: audit.Actor) -> None:
    current = {g.index: g for g in session.scalars(select(GpuModel).where(
        GpuModel.node_id == node.id))}
    held = set(session.scalars(select(GpuAssignmentModel.gpu_id).where(
        GpuAssignmentModel.gpu_id.in_([g.id for g in current.values()]))))
    # Whether placement's view of the node changes (GPUs added, gone, healthy or not, another
    # model): only then is its capacity recomputed, not on every heartbeat.
    changed = bool(current.keys() - {r.index for r in gpus})
    for report in gpus:
        g = current.pop(report.index, None)
        changed = changed or g is None or (g.healthy, g.model) != (report.healthy, report.model)
        if g is None:
            session.add(GpuModel(id=new_id("gpu"), node_id=node.id, index=report.index,
                                 model=report.model, name=report.name,
                                 memory_gib=report.memory_gib, uuid=report.uuid,
                                 healthy=report.healthy, health_detail=report.health_detail))
            continue
        if g.healthy != report.healthy:
            audit.record(session, actor=actor, action="gpuaas.gpu.health", target_type="gpu",
                         target_id=g.id, scope_path=_scope(),
                         changes=audit.diff({"healthy": g.healthy}, {"healthy": report.healthy}),
                         details={"node_id": node.id, "index": g.index,
                                  "detail": report.health_detail})
        g.model, g.name, g.memory_gib, g.uuid = (report.model, report.name, report.memory_gib,
                                                 report.uuid)
        g.healthy, g.health_detail = report.healthy, report.health_detail
    for g in current.values():  # no longer reported: keep it while an instance holds it
        if g.id in held:
            g.healthy, g.health_detail = False, "no longer reported by the agent"
        else:
            session.delete(g)
    if changed:
        capacity.touch(session, node.id)
    session.flush()


def set_node_state(session: Session, node: NodeModel, state: NodeState, reason: str, *,
                   actor: audit.Actor, drain_deadline: datetime | None = None) -> None:
    old = node.state
    node.state, node.state_reason, node.drain_deadline = state.value, reason, drain_deadline
    capacity.touch(session, node.id)
    session.flush()
    audit.record(session, actor=actor, action=f"gpuaas.node.{state.value}", target_type="node",
                 target_id=node.id, scope_path=_scope(),
                 changes=audit.diff({"state": old}, {"state": state.value}),
                 details={"reason": reason})


def change_node_state(session: Session, node_id: str, action: str, *, actor: audit.Actor,
                      now: datetime, grace_seconds: int = 300, reason: str = "") -> NodeModel:
    """cordon: no new placements; drain: that, and running instances are stopped after the
    grace; uncordon: back to ready. A down node changes only when its agent is back and has
    reconciled it."""
    lock_placements(session)
    # Read again, locked, after the lock: the node may have gone down meanwhile (a cordon
    # written over "down" would let a later uncordon skip the agent's reconcile).
    node = session.scalar(select(NodeModel).where(NodeModel.id == node_id).with_for_update()
                          .execution_options(populate_existing=True))
    if node is None:
        raise NotFound(f"node {node_id} not found")
    if node.state == NodeState.DOWN.value:
        raise Conflict(f"node {node_id} is down; it returns when its agent heartbeats "
                       "and has killed what should no longer run there")
    if action == "uncordon" and credentials_revoked(session, node_id):
        raise Conflict(f"node {node_id}: its credential was revoked; it returns when its "
                       "host joins again with a new token")
    by = reason or f"{action} by operator"
    if action == "cordon":
        set_node_state(session, node, NodeState.CORDONED, by, actor=actor)
    elif action == "drain":
        set_node_state(session, node, NodeState.DRAINING, by, actor=actor,
                   drain_deadline=now + timedelta(seconds=grace_seconds))
    elif action == "uncordon":
        set_node_state(session, node, NodeState.READY, by, actor=actor)
    else:
        raise ValueError(f"unknown node action {action!r}")
    return node


def credentials_revoked(session: Session, node_id: str) -> bool:
    """The node joined with a credential and has none valid any more (a node registered by
    an in-process agent has none at all)."""
    total, revoked = session.execute(select(
        func.count(), func.count(NodeCredentialModel.revoked_at)).where(
        NodeCredentialModel.node_id == node_id)).one()
    return bool(total) and total == revoked


def enforce_drains(session: Session, *, now: datetime) -> int:
    """Ask instances still on draining nodes past their deadline to stop."""
    n = 0
    nodes = session.scalars(select(NodeModel).where(
        NodeModel.state == NodeState.DRAINING.value, NodeModel.drain_deadline <= now))
    for node in nodes:
        for inst in session.scalars(select(InstanceModel).where(
                InstanceModel.node_id == node.id,
                InstanceModel.state.in_([s.value for s in ON_NODE_STATES]),
                InstanceModel.stop_requested_at.is_(None))):
            inst.stop_requested_at = now
            inst.stop_reason = f"node {node.name} drained: grace period over"
            audit.record(session, actor=MONITOR, action="gpuaas.instance.stop_request",
                         target_type="instance", target_id=inst.id, scope_path=inst.scope_path,
                         details={"reason": inst.stop_reason})
            n += 1
    return n


def mark_silent_nodes_down(session: Session, *, now: datetime, timeout: timedelta) -> int:
    """Nodes without a heartbeat for ``timeout`` go down; their instances are lost (or, if
    only scheduled there, requeued)."""
    n = 0
    lock_placements(session)  # a pass placing on a node going down commits first: requeued
    silent = list(session.scalars(select(NodeModel).where(
        NodeModel.state != NodeState.DOWN.value,
        NodeModel.last_heartbeat_at < now - timeout).order_by(NodeModel.id).with_for_update()))
    if not silent:
        return 0
    # Lock their instances (id order) before any write: one that a stop or its agent ends
    # meanwhile is waited for and then skipped (its state no longer matches), never ended a
    # second time or requeued after it was cancelled.
    on_silent = list(session.scalars(select(InstanceModel).where(
        InstanceModel.node_id.in_([node.id for node in silent]),
        InstanceModel.state.in_([InstanceState.SCHEDULED.value,
                                 *(s.value for s in ON_NODE_STATES)]))
        .order_by(InstanceModel.id).with_for_update()
        .execution_options(populate_existing=True)))
    for node in silent:
        reason = (f"no heartbeat since {node.last_heartbeat_at.isoformat()} "
                  f"({int(timeout.total_seconds())}s allowed)")
        set_node_state(session, node, NodeState.DOWN, reason, actor=MONITOR)
        for inst in (i for i in on_silent if i.node_id == node.id):
            if inst.state == InstanceState.SCHEDULED.value:
                switch_instance_status(session, inst, InstanceState.ADMITTED, actor=MONITOR,
                                       at=now, reason=f"requeued: node {node.name} went down")
                inst.node_id, inst.gpu_indices = None, None
            else:
                switch_instance_status(session, inst, InstanceState.LOST, actor=MONITOR, at=now,
                                       reason=f"node {node.name} went down: {reason}")
        n += 1
    return n


def node_view(session: Session, node: NodeModel) -> Node:
    return _views(session, [node])[0]


def _views(session: Session, nodes: list[NodeModel]) -> list[Node]:
    """Nodes with their GPUs and holders, in three queries whatever the number of nodes."""
    ids = [n.id for n in nodes]
    gpus: dict[str, list[GpuModel]] = {}
    holders: dict[str, str] = {}
    for start in range(0, len(ids), 500):
        part = ids[start:start + 500]
        holders.update((gpu_id, inst_id) for gpu_id, inst_id in session.execute(
            select(GpuAssignmentModel.gpu_id, GpuAssignmentModel.instance_id)
            .join(GpuModel, GpuModel.id == GpuAssignmentModel.gpu_id)
            .where(GpuModel.node_id.in_(part))))
        for g in session.scalars(select(GpuModel).where(GpuModel.node_id.in_(part))
                                 .order_by(GpuModel.node_id, GpuModel.index)):
            gpus.setdefault(g.node_id, []).append(g)
    return [Node(id=node.id, name=node.name, state=node.state, state_reason=node.state_reason,
                 labels=node.labels, inventory_source=node.inventory_source,
                 simulated=node.simulated, last_heartbeat_at=node.last_heartbeat_at,
                 drain_deadline=node.drain_deadline,
                 gpus=[Gpu(index=g.index, model=g.model, name=g.name, memory_gib=g.memory_gib,
                           uuid=g.uuid, healthy=g.healthy, health_detail=g.health_detail,
                           instance_id=holders.get(g.id))
                       for g in gpus.get(node.id, ())])
            for node in nodes]


def list_nodes(session: Session) -> list[Node]:
    return _views(session, list(session.scalars(select(NodeModel).order_by(NodeModel.name))))
