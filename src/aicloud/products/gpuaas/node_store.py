"""What a node agent asks of the control plane, as named operations on plain data.

The agent (``agent.py``) never holds a database: it holds a :class:`NodeStore`. Every
operation takes and returns plain values (strings, numbers, datetimes, small frozen
dataclasses), so the same agent runs against :class:`DbNodeStore` in the control plane's
process (tests, the server-side gateway of the link) or against the link's RPCs on a remote
host (``LinkNodeStore``), and the wire format (``node_wire.py``) is a direct mapping.

:class:`DbNodeStore` is scoped to one node: built with a node id (the gateway, from the
authenticated credential), every read and write is confined to that node's instances; a
lease token or instance id of another node's instance reads as absent. Built without one
(tests, a trusted in-process agent) it registers the node by the reported name on the first
heartbeat and is bound to it from then on.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal, Protocol

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from aicloud.platform import audit, metrics
from aicloud.products.gpuaas.instances import switch_instance_status
from aicloud.products.gpuaas.lifecycle import ON_NODE_STATES, IllegalTransition, InstanceState
from aicloud.products.gpuaas.metering import meter_instance
from aicloud.products.gpuaas.models import InstanceModel, NodeModel
from aicloud.products.gpuaas.nodes import NodeReport, node_reconciled, register_node
from aicloud.products.gpuaas.placement import NodeState
from aicloud.products.gpuaas.telemetry import record_node_metrics
from aicloud.shared import leases
from aicloud.shared.clock import Clock, SystemClock
from aicloud.shared.db import Database
from aicloud.shared.errors import AppError, NotFound

log = logging.getLogger(__name__)
S = InstanceState
WORK_STATES = (S.SCHEDULED.value, *(s.value for s in ON_NODE_STATES))
# The ends an agent may record: it observes a workload's exit, vanishing, or completed stop.
AGENT_ENDS = frozenset({S.SUCCEEDED, S.FAILED, S.STOPPED, S.LOST})


@dataclass(frozen=True)
class WorkItem:
    """One instance of the node that may need its agent: what the agent reads of the row."""

    id: str
    state: str
    template: str
    gpu_count: int
    gpu_model: str
    gpu_indices: tuple[int, ...]
    command: tuple[str, ...] | None
    provider: str | None
    provider_ref: str | None
    stop_requested: bool
    stop_reason: str | None
    last_metered_at: datetime | None
    lock_token: str | None
    lock_expires_at: datetime | None


# --- the steps an agent takes on a leased instance (plain data; the store applies them) ---

@dataclass(frozen=True)
class Provisioning:
    provider: str  # the provider's name, for the reason shown to users
    kind: Literal["provisioning"] = "provisioning"


@dataclass(frozen=True)
class Running:
    provider: str
    ref: str
    endpoint: str | None
    started_at: datetime
    kind: Literal["running"] = "running"


@dataclass(frozen=True)
class Stopping:
    kind: Literal["stopping"] = "stopping"


@dataclass(frozen=True)
class End:
    state: str  # one of AGENT_ENDS
    reason: str
    at: datetime
    exit_code: int | None = None
    kind: Literal["end"] = "end"


@dataclass(frozen=True)
class Meter:
    until: datetime
    kind: Literal["meter"] = "meter"


Step = Provisioning | Running | Stopping | End | Meter


@dataclass(frozen=True)
class StepResult:
    """``applied``: the step was written. ``released``: the agent no longer holds the lease
    (the step ended the instance, or the lease was lost or the row is gone)."""

    applied: bool
    released: bool


@dataclass(frozen=True)
class Beat:
    node_id: str
    kept: tuple[leases.Lease, ...]
    metered: int
    # The metrics samples sent with the beat: values recorded, values or samples dropped
    # (another node's instance, out of range, too old) and the first few reasons.
    metric_values: int = 0
    metrics_dropped: int = 0
    metrics_problems: tuple[str, ...] = ()


# What the agent does with a workload its provider runs (see NodeAgent.kill_leftovers).
Verdict = Literal["keep", "ended", "kill", "forget"]


@dataclass(frozen=True)
class LeftoverCheck:
    was_down: bool
    verdicts: dict[str, Verdict]


class NodeStore(Protocol):
    """The control plane as one node's agent sees it."""

    def heartbeat(self, report: NodeReport, held: list[leases.Lease], *, ttl: timedelta,
                  now: datetime, meter_before: datetime,
                  samples: Sequence[dict[str, Any]] = ()) -> Beat:
        """Refresh the node (inventory, GPU health), renew the held leases, report the
        usage of its running instances last metered before ``meter_before`` up to ``now``
        and record the metrics ``samples`` (the collector's, JSON-ready) of this node; a
        sample the control plane refuses is dropped, never a failed heartbeat."""
        ...

    def work(self) -> list[WorkItem]:
        """The node's instances that may need the agent, in queue order."""
        ...

    def claim(self, instance_ids: list[str], *, owner: str, ttl: timedelta) -> list[leases.Lease]:
        ...

    def release(self, held: list[leases.Lease]) -> int:
        ...

    def step(self, lease: leases.Lease, step: Step) -> StepResult:
        ...

    def leftovers(self, refs: list[str]) -> LeftoverCheck:
        """For each workload ref the provider runs: keep it, leave it (ended), kill it, or
        kill and remove it (no instance of this node has it)."""
        ...

    def record_kills(self, refs: list[str]) -> None:
        ...

    def node_reconciled(self, killed: list[str]) -> None:
        ...


class DbNodeStore:
    """The node operations on the platform's database (see the module docstring)."""

    def __init__(self, db: Database, *, clock: Clock | None = None, node_id: str | None = None,
                 actor: audit.Actor | None = None) -> None:
        self.db, self.clock, self.node_id = db, clock or SystemClock(), node_id
        self.actor = actor or audit.Actor.system("gpuaas-agent")

    def _node(self) -> str:
        if self.node_id is None:
            raise NotFound("this agent's node is not registered yet (no heartbeat)")
        return self.node_id

    def heartbeat(self, report: NodeReport, held: list[leases.Lease], *, ttl: timedelta,
                  now: datetime, meter_before: datetime,
                  samples: Sequence[dict[str, Any]] = ()) -> Beat:
        with self.db.transaction() as session:
            node = register_node(session, report, actor=self.actor, now=now,
                                 node_id=self.node_id)
            self.node_id = node.id
            kept = leases.heartbeat(session, InstanceModel, self._own(session, held), ttl=ttl,
                                    clock=self.clock)
            metered = self._meter_due(session, kept, now, meter_before)
            recorded = self._record_metrics(session, node.id, samples)
        return Beat(node_id=node.id, kept=tuple(kept), metered=metered,
                    metric_values=recorded.values, metrics_dropped=recorded.dropped,
                    metrics_problems=tuple(recorded.problems))

    def _record_metrics(self, session: Session, node_id: str,
                        samples: Sequence[dict[str, Any]]) -> metrics.RecordResult:
        """In the heartbeat's transaction (still one write transaction per beat) but in a
        savepoint, last: a report that fails (refused as a whole, a lock conflict with
        retention, a bug) rolls back alone, and the node's refresh, the lease renewals and
        the usage windows above still commit. The node id is the store's (the credential's),
        and the time is the control plane's: an agent's clock decides nothing."""
        if not samples:
            return metrics.RecordResult()
        try:
            with session.begin_nested():
                return record_node_metrics(session, node_id, samples, now=self.clock.now())
        except Exception as exc:
            log.warning("node %s: metrics report dropped: %s", node_id, exc,
                        exc_info=not isinstance(exc, AppError))
            out = metrics.RecordResult()
            out.refuse(f"report dropped: {str(exc)[:200]}", len(samples))
            return out

    def _own(self, session: Session, held: list[leases.Lease]) -> list[leases.Lease]:
        """The leases among ``held`` on this node's instances (others are dropped unread)."""
        if not held:
            return []
        mine: set[str] = set()
        ids = sorted({lease.row_id for lease in held})
        for i in range(0, len(ids), leases.BATCH):
            mine |= set(session.scalars(select(InstanceModel.id).where(
                InstanceModel.id.in_(ids[i:i + leases.BATCH]),
                InstanceModel.node_id == self.node_id)))
        return [lease for lease in held if lease.row_id in mine]

    def _meter_due(self, session: Session, held: list[leases.Lease], now: datetime,
                   before: datetime) -> int:
        """Each in a savepoint, so one that fails (retried next heartbeat) neither stops the
        others nor the node's heartbeat."""
        if not held:
            return 0
        tokens = {lease.row_id: lease.token for lease in held}
        metered = 0
        ids = sorted(tokens)
        for i in range(0, len(ids), leases.BATCH):
            rows = session.scalars(select(InstanceModel).where(
                InstanceModel.id.in_(ids[i:i + leases.BATCH]),
                InstanceModel.node_id == self.node_id,
                InstanceModel.state == S.RUNNING.value,
                InstanceModel.last_metered_at < before)
                .order_by(InstanceModel.id).with_for_update()
                .execution_options(populate_existing=True))
            for inst in rows:
                if inst.lock_token != tokens[inst.id]:
                    continue
                try:
                    with session.begin_nested():
                        metered += bool(meter_instance(session, inst, until=now,
                                                       actor=self.actor))
                except Exception:
                    log.exception("instance %s: usage report failed; retried next heartbeat",
                                  inst.id)
        return metered

    def work(self) -> list[WorkItem]:
        node_id = self._node()
        with self.db.read_transaction() as session:
            return [_item(m) for m in session.scalars(select(InstanceModel).where(
                InstanceModel.node_id == node_id,
                InstanceModel.state.in_(WORK_STATES)).order_by(InstanceModel.queue_order))]

    def claim(self, instance_ids: list[str], *, owner: str, ttl: timedelta) -> list[leases.Lease]:
        node_id = self._node()
        if not instance_ids:
            return []
        with self.db.transaction() as session:
            return leases.claim(
                session, InstanceModel, owner=owner, limit=len(instance_ids), ttl=ttl,
                where=[InstanceModel.id.in_(instance_ids), InstanceModel.node_id == node_id,
                       InstanceModel.state.in_(WORK_STATES)],
                order_by=[InstanceModel.queue_order], clock=self.clock)

    def release(self, held: list[leases.Lease]) -> int:
        if not held:
            return 0
        with self.db.transaction() as session:
            return len(leases.release_all(session, InstanceModel, self._own(session, held)))

    def step(self, lease: leases.Lease, step: Step) -> StepResult:
        """Apply ``step`` to the leased row in one transaction. Not applied when the lease
        was lost or the row moved on meanwhile (a user's cancel, the node monitor): the row
        is read locked, so the step sees its current state and an edge that no longer
        exists rolls back. A row that the step ends loses its lease in the same
        transaction."""
        node_id = self._node()
        if isinstance(step, End) and S(step.state) not in AGENT_ENDS:
            raise ValueError(f"an agent cannot end an instance as {step.state!r}")
        try:
            with self.db.transaction() as session:
                inst = session.scalar(select(InstanceModel).where(
                    InstanceModel.id == lease.row_id, InstanceModel.node_id == node_id,
                    InstanceModel.lock_token == lease.token).with_for_update()
                    .execution_options(populate_existing=True))
                if inst is None:  # the lease was lost (or the row is gone)
                    return StepResult(applied=False, released=True)
                self._apply(session, inst, step)
                ended = inst.state not in WORK_STATES
                if ended:
                    inst.lock_token = inst.lock_owner = inst.lock_expires_at = None
        except IllegalTransition as e:
            # The agent's next pass reads what it became (and forgets it if it ended).
            log.info("instance %s changed meanwhile: %s", lease.row_id, e)
            return StepResult(applied=False, released=False)
        return StepResult(applied=True, released=ended)

    def _apply(self, session: Session, inst: InstanceModel, step: Step) -> None:
        now = self.clock.now()
        if isinstance(step, Provisioning):
            switch_instance_status(session, inst, S.PROVISIONING, actor=self.actor, at=now,
                                   reason=f"provisioning on node {inst.node_id} "
                                          f"({step.provider})")
        elif isinstance(step, Running):
            inst.provider, inst.provider_ref = step.provider, step.ref
            inst.endpoint_url = step.endpoint
            inst.started_at = inst.last_metered_at = step.started_at
            switch_instance_status(session, inst, S.RUNNING, actor=self.actor,
                                   at=step.started_at, reason="running" + (
                                       f", serving on {step.endpoint}" if step.endpoint
                                       else ""))
        elif isinstance(step, Stopping):
            switch_instance_status(session, inst, S.STOPPING, actor=self.actor, at=now,
                                   reason=inst.stop_reason or "stop requested")
        elif isinstance(step, Meter):
            if inst.state == S.RUNNING.value:
                meter_instance(session, inst, until=step.until, actor=self.actor)
        elif isinstance(step, End):
            # The same instant ends the run and the last usage window; never before a window
            # already reported (the heartbeat may have metered past a workload's exit).
            end = (max(step.at, inst.last_metered_at) if inst.last_metered_at is not None
                   else step.at)
            meter_instance(session, inst, until=end, actor=self.actor)
            inst.exit_code = step.exit_code
            switch_instance_status(session, inst, S(step.state), reason=step.reason,
                                   actor=self.actor, at=end)
        else:  # pragma: no cover - the Step union is closed
            raise TypeError(f"unknown step {step!r}")

    def leftovers(self, refs: list[str]) -> LeftoverCheck:
        node_id = self._node()
        with self.db.read_transaction() as session:
            node = session.get(NodeModel, node_id)
            was_down = node is not None and node.state == NodeState.DOWN.value
            rows = _rows_of(session, node_id, refs)
        verdicts: dict[str, Verdict] = {}
        for ref in refs:
            row = rows.get(ref)
            if row is None:
                verdicts[ref] = "forget"  # no instance of this node: nothing reads it here
            elif S(row.state) in ON_NODE_STATES:
                verdicts[ref] = "keep"
            elif row.state in (S.STOPPED.value, S.SUCCEEDED.value):
                # Only ever stopped or succeeded after its workload ended (or before one
                # existed): nothing to kill, and not asking spares a provider call per ended
                # workload per beat.
                verdicts[ref] = "ended"
            else:
                verdicts[ref] = "kill"
        return LeftoverCheck(was_down=was_down, verdicts=verdicts)

    def record_kills(self, refs: list[str]) -> None:
        node_id = self._node()
        if not refs:
            return
        with self.db.transaction() as session:
            rows = _rows_of(session, node_id, refs)
            for ref in refs:
                row = rows.get(ref)
                audit.record(session, actor=self.actor, action="gpuaas.workload.kill",
                             target_type="workload", target_id=ref[:64],
                             scope_path=row.scope_path if row else "/",
                             details={"node_id": node_id, "instance_state":
                                      row.state if row else None,
                                      "reason": "should not run on this node"})

    def node_reconciled(self, killed: list[str]) -> None:
        node_id = self._node()
        with self.db.transaction() as session:
            node_reconciled(session, node_id, killed=killed, actor=self.actor)


def _item(m: InstanceModel) -> WorkItem:
    return WorkItem(
        id=m.id, state=m.state, template=m.template, gpu_count=m.gpu_count,
        gpu_model=m.gpu_model, gpu_indices=tuple(m.gpu_indices or ()),
        command=tuple(m.command) if m.command else None, provider=m.provider,
        provider_ref=m.provider_ref, stop_requested=m.stop_requested_at is not None,
        stop_reason=m.stop_reason, last_metered_at=m.last_metered_at,
        lock_token=m.lock_token, lock_expires_at=m.lock_expires_at)


def _rows_of(session: Session, node_id: str, refs: list[str]) -> dict[str, InstanceModel]:
    """This node's instance rows of these workload refs (a ref is the provider's, or the
    instance id the workload was created with), detached."""
    found: dict[str, InstanceModel] = {}
    for i in range(0, len(refs), 500):
        chunk = refs[i:i + 500]
        for m in session.scalars(select(InstanceModel).where(
                InstanceModel.node_id == node_id,
                or_(InstanceModel.id.in_(chunk), InstanceModel.provider_ref.in_(chunk)))):
            session.expunge(m)
            found[m.provider_ref if m.provider_ref in chunk else m.id] = m
    return found
