"""The node agent: runs the instances placed on one node through a compute provider.

Level-triggered: each pass claims (with leases) the instances of this node that exist or
should exist there and moves each one step towards what its row says:

- scheduled / provisioning: create + start the workload (both idempotent), then running
  with the endpoint the provider reports;
- running: stop if asked; otherwise read the workload's status (ended by itself: stopped or
  failed; vanished: lost) and report usage every ``meter_interval``;
- stopping: stop the workload (SIGTERM, then SIGKILL after the grace), report the final
  partial window, stopped.

Everything it needs is in the database and in the provider's own records, so a restarted
agent re-attaches to the workloads that kept running. Slow provider calls run with no
transaction open; results are written only while the lease is still held.

Leftovers: every heartbeat compares what the provider runs (``list_workloads``) with what
should run here (instances placed on this node in an on-node state) and kills the rest: the
workloads of instances marked lost while the node was down (their GPUs were given back), of
instances that ended or whose rows are gone. A node that was down stays unschedulable until
this has been done (``node_reconciled``), so its GPUs are never offered while an old workload
still holds them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import or_, select
from sqlalchemy.orm import Session, object_session

from aicloud.adapters.providers.base import (
    SERVING_KINDS,
    ComputeProvider,
    GpuAssignment,
    ProviderError,
    SupportsEndpoints,
    WorkloadHandle,
    WorkloadKind,
    WorkloadNotFound,
    WorkloadPhase,
    WorkloadSpec,
    WorkloadStatus,
)
from aicloud.platform import audit
from aicloud.products.gpuaas.instances import switch_instance_status
from aicloud.products.gpuaas.lifecycle import ON_NODE_STATES, IllegalTransition, InstanceState
from aicloud.products.gpuaas.metering import meter_instance
from aicloud.products.gpuaas.models import InstanceModel, NodeModel
from aicloud.products.gpuaas.nodes import NodeReport, node_reconciled, register_node
from aicloud.products.gpuaas.placement import NodeState
from aicloud.shared import leases
from aicloud.shared.clock import Clock, SystemClock
from aicloud.shared.db import Database

log = logging.getLogger(__name__)
S = InstanceState
_WORK_STATES = [S.SCHEDULED.value, *(s.value for s in ON_NODE_STATES)]


@dataclass
class NodeAgent:
    db: Database
    provider: ComputeProvider
    report: Callable[[], NodeReport]
    clock: Clock = field(default_factory=SystemClock)
    meter_interval: timedelta = timedelta(seconds=30)
    stop_grace_seconds: float = 10.0
    lease_ttl: timedelta = timedelta(seconds=60)
    node_id: str | None = None

    def __post_init__(self) -> None:
        self.owner = leases.lease_owner_name("gpuaas-agent")
        self.actor = audit.Actor.system("gpuaas-agent")

    # --- node ----------------------------------------------------------------------------

    def heartbeat(self) -> str:
        """Register or refresh this node with its current inventory and GPU health, then kill
        what runs here without a reason (which makes a node that was down ready again)."""
        report = self.report()
        with self.db.transaction() as session:
            node = register_node(session, report, actor=self.actor, now=self.clock.now())
            self.node_id = node.id
        self.kill_leftovers()
        return self.node_id

    def kill_leftovers(self) -> list[str]:
        """Kill every workload of the provider that should not run on this node; returns
        their refs. Those whose instance row is gone are also removed (nothing can read their
        logs any more); those of known instances are kept, ended, so their logs stay readable.

        The provider is asked BEFORE the database is read: a workload that reconcile_once is
        creating right now already has its row in ``provisioning`` on this node, so it is never
        taken for a leftover. A down node gets no placements, so for it the rows read are final
        and, once every leftover is dead, it is marked ready."""
        assert self.node_id is not None
        handles = self.provider.list_workloads()
        with self.db.transaction() as session:
            node = session.get(NodeModel, self.node_id)
            was_down = node is not None and node.state == NodeState.DOWN.value
            rows = _rows_of(session, [h.ref for h in handles])
        killed, failed = [], False
        for handle in handles:
            row = rows.get(handle.ref)
            if (row is not None and row.node_id == self.node_id
                    and S(row.state) in ON_NODE_STATES):
                continue
            if row is not None and row.state in (S.STOPPED.value, S.SUCCEEDED.value):
                # Only ever stopped or succeeded after its workload ended (or before one
                # existed): nothing to kill, and not asking spares a provider call per ended
                # workload per beat.
                continue
            try:
                if self._kill(handle, forget=row is None):
                    killed.append(handle.ref)
            except ProviderError as e:
                failed = True
                log.warning("leftover workload %s: cannot kill it yet: %s", handle.ref, e)
        if killed:
            with self.db.transaction() as session:
                for ref in killed:
                    row = rows.get(ref)
                    audit.record(session, actor=self.actor, action="gpuaas.workload.kill",
                                 target_type="workload", target_id=ref,
                                 scope_path=row.scope_path if row else "/",
                                 details={"node_id": self.node_id, "instance_state":
                                          row.state if row else None,
                                          "reason": "should not run on this node"})
        if was_down and not failed:
            with self.db.transaction() as session:
                node_reconciled(session, self.node_id, killed=killed, actor=self.actor)
        return killed

    def _kill(self, handle: WorkloadHandle, *, forget: bool) -> bool:
        """Stop a leftover at once (its GPUs are someone else's); True if it was alive."""
        try:
            alive = self.provider.status(handle).phase is not WorkloadPhase.EXITED
            if alive:
                self.provider.stop(handle, grace_seconds=0)
            if forget:
                self.provider.remove(handle)
        except WorkloadNotFound:
            return False
        return alive

    # --- instances -----------------------------------------------------------------------

    def reconcile_once(self) -> int:
        """One pass over the instances of this node; returns how many were handled."""
        if self.node_id is None:
            self.heartbeat()
        with self.db.transaction() as session:
            claimed = leases.claim(
                session, InstanceModel, owner=self.owner, limit=100, ttl=self.lease_ttl,
                where=[InstanceModel.node_id == self.node_id,
                       InstanceModel.state.in_(_WORK_STATES)],
                order_by=[InstanceModel.queue_order], clock=self.clock)
        for lease in claimed:
            try:
                self._handle(lease)
            except Exception:
                log.exception("instance %s: reconcile failed", lease.row_id)
            finally:
                with self.db.transaction() as session:
                    leases.release(session, InstanceModel, lease)
        return len(claimed)

    def _write(self, lease: leases.Lease,
               fn: Callable[[InstanceModel], object]) -> bool:
        """Apply ``fn`` to the leased row in one transaction; False when the lease was lost or
        the row moved on meanwhile (a user's cancel, the node monitor): the row is read locked,
        so ``fn`` sees its current state and an edge that no longer exists rolls back."""
        try:
            with self.db.transaction() as session:
                inst = session.scalar(select(InstanceModel).where(
                    InstanceModel.id == lease.row_id,
                    InstanceModel.lock_token == lease.token).with_for_update()
                    .execution_options(populate_existing=True))
                if inst is None:
                    return False
                fn(inst)
                return True
        except IllegalTransition as e:
            log.info("instance %s changed meanwhile: %s", lease.row_id, e)
            return False

    def _switch(self, lease: leases.Lease, target: InstanceState, reason: str,
                extra: Callable[[InstanceModel], object] | None = None,
                at: datetime | None = None) -> bool:
        def apply(inst: InstanceModel) -> None:
            session = _session(inst)
            if extra is not None:
                extra(inst)
            switch_instance_status(session, inst, target, reason=reason, actor=self.actor,
                                   at=at or self.clock.now())
        return self._write(lease, apply)

    def _snapshot(self, lease: leases.Lease) -> InstanceModel | None:
        with self.db.transaction() as session:
            inst = leases.get_leased(session, InstanceModel, lease)
            if inst is not None:
                session.expunge(inst)
            return inst

    def _handle(self, lease: leases.Lease) -> None:
        inst = self._snapshot(lease)
        if inst is None:
            return
        state = S(inst.state)
        if state is S.SCHEDULED:
            if inst.stop_requested_at is not None:  # defensive; cancels go straight to stopped
                return
            if not self._switch(lease, S.PROVISIONING,
                                f"provisioning on node {self.node_id} ({self.provider.name})"):
                return
            self._provision(lease, inst)
        elif state is S.PROVISIONING:
            self._provision(lease, inst)
        elif state is S.RUNNING:
            if inst.stop_requested_at is not None:
                if self._switch(lease, S.STOPPING, inst.stop_reason or "stop requested"):
                    self._stop(lease, inst)
            else:
                self._observe(lease, inst)
        elif state is S.STOPPING:
            self._stop(lease, inst)

    def _spec(self, inst: InstanceModel) -> WorkloadSpec:
        return WorkloadSpec(
            workload_id=inst.id, kind=WorkloadKind(inst.template),
            gpus=GpuAssignment(inst.gpu_count, inst.gpu_model, tuple(inst.gpu_indices or ())),
            command=tuple(inst.command) if inst.command else None)

    def _provision(self, lease: leases.Lease, inst: InstanceModel) -> None:
        try:
            handle = self.provider.create(self._spec(inst))
            status = self.provider.start(handle)
            endpoint = None
            if (WorkloadKind(inst.template) in SERVING_KINDS
                    and isinstance(self.provider, SupportsEndpoints)):
                endpoint = self.provider.endpoint(handle).url
        except ProviderError as e:
            if e.temporary:
                log.warning("instance %s: provider busy (%s); retrying next pass", inst.id, e)
                return
            self._switch(lease, S.FAILED, f"provider {self.provider.name} refused: {e}")
            return
        now = self.clock.now()

        def started(row: InstanceModel) -> None:
            row.provider, row.provider_ref = handle.provider, handle.ref
            row.endpoint_url = endpoint
            row.started_at = row.last_metered_at = now
        if not self._switch(lease, S.RUNNING, "running" + (
                f", serving on {endpoint}" if endpoint else ""), started, at=now):
            return
        if status.phase is WorkloadPhase.EXITED:
            # A short workload may end before start() returns: it ran, so record its end now.
            self._exited(lease, status, now)

    def _handle_of(self, inst: InstanceModel) -> WorkloadHandle:
        return WorkloadHandle(inst.provider or self.provider.name, inst.provider_ref or inst.id)

    def _observe(self, lease: leases.Lease, inst: InstanceModel) -> None:
        now = self.clock.now()
        try:
            status = self.provider.status(self._handle_of(inst))
        except WorkloadNotFound:
            self._end(lease, S.LOST, "the workload vanished from the node", now)
            return
        if status.phase is WorkloadPhase.EXITED:
            self._exited(lease, status, _within(status.finished_at, inst.last_metered_at, now))
            return
        if inst.last_metered_at is not None and now - inst.last_metered_at >= self.meter_interval:
            self._write(lease, lambda row: meter_instance(
                _session(row), row, until=now, actor=self.actor))

    def _exited(self, lease: leases.Lease, status: WorkloadStatus, end: datetime) -> None:
        if status.exit_code == 0:
            self._end(lease, S.SUCCEEDED, "the workload ended by itself (exit 0)", end, 0)
        else:
            self._end(lease, S.FAILED, f"the workload exited with code {status.exit_code}: "
                      f"{status.detail}".strip(": "), end, status.exit_code)

    def _stop(self, lease: leases.Lease, inst: InstanceModel) -> None:
        if inst.provider_ref is not None:
            try:
                self.provider.stop(self._handle_of(inst), grace_seconds=self.stop_grace_seconds)
            except WorkloadNotFound:
                pass  # nothing left to stop
        self._end(lease, S.STOPPED, inst.stop_reason or "stopped", self.clock.now())

    def _end(self, lease: leases.Lease, target: InstanceState, reason: str, at: datetime,
             exit_code: int | None = None) -> None:
        def final(row: InstanceModel) -> None:
            meter_instance(_session(row), row, until=at, actor=self.actor)
            row.exit_code = exit_code
        # The same instant ends the run and the last usage window.
        self._switch(lease, target, reason, final, at=at)


def _session(row: InstanceModel) -> Session:
    session = object_session(row)
    assert session is not None
    return session


def _within(value: datetime | None, low: datetime | None, high: datetime) -> datetime:
    if value is None or (low is not None and value < low) or value > high:
        return high
    return value


def _rows_of(session: Session, refs: list[str]) -> dict[str, InstanceModel]:
    """The instance rows of these workload refs (a ref is the provider's, or the instance id
    the workload was created with), detached."""
    found: dict[str, InstanceModel] = {}
    for i in range(0, len(refs), 500):
        chunk = refs[i:i + 500]
        for m in session.scalars(select(InstanceModel).where(or_(
                InstanceModel.id.in_(chunk), InstanceModel.provider_ref.in_(chunk)))):
            session.expunge(m)
            found[m.provider_ref if m.provider_ref in chunk else m.id] = m
    return found


def instances_on_node(db: Database, node_id: str) -> list[str]:
    with db.transaction() as session:
        return list(session.scalars(select(InstanceModel.id).where(
            InstanceModel.node_id == node_id, InstanceModel.state.in_(_WORK_STATES))))
