"""The node agent: runs the instances placed on one node through a compute provider.

Level-triggered: each pass reads the instances of this node that exist or should exist there
and moves each one that needs it one step towards what its row says:

- scheduled / provisioning: create + start the workload (both idempotent), then running
  with the endpoint the provider reports;
- running: stop if asked; otherwise read the workload's status (ended by itself: succeeded
  or failed; vanished: lost);
- stopping: stop the workload (SIGTERM, then SIGKILL after the grace), report the final
  partial window, stopped.

It holds no database: it asks a :class:`~aicloud.products.gpuaas.node_store.NodeStore`
(named operations on plain data: ``DbNodeStore`` in the control plane's process, the link's
RPCs on a remote node). Everything it needs is in the store and in the provider's own
records, so a restarted agent re-attaches to the workloads that kept running. Slow provider
calls run with no store call in flight; results are written only while the lease is held.

Database load (through DbNodeStore): an idle node costs ONE write transaction per heartbeat
interval, whatever the number of its instances. The agent leases each instance of its node
once, when it first sees it, and keeps the lease until the instance ends (the end clears it
in the same transaction). The heartbeat renews all of its leases with one UPDATE, in the
transaction that refreshes the node, and reports in that same transaction the usage windows
that would otherwise outgrow ``meter_interval`` before the next heartbeat, and the metrics
samples of the running workloads (in a savepoint: a refused report never fails the beat).
The reconcile pass (every 0.5 s) only reads: the node's instances (a read transaction) and, for the
running ones, the provider's status (in memory, no write). It writes when an instance needs
something: a new one to claim, a step to take, an end to record.

Errors, as kopf treats them: a temporary one (a provider that says so, a database error, a
bug) is retried for that instance only, after an exponential backoff with jitter, capped
(:class:`~aicloud.shared.controllers.Backoff`); a permanent one (the provider refuses the
spec, cannot report on the workload) fails the instance once, with the reason. Provisioning
that keeps failing temporarily is failed after ``provision_timeout``. A stop is never given
up: a stopping instance keeps its GPUs until its workload is known to be gone.

Crash safety: a SIGKILLed agent's leases expire after ``lease_ttl`` (the node heartbeat
timeout when built by the composition root); the next agent of the node claims the instances
then and re-attaches. A clean stop hands them back at once (:meth:`NodeAgent.release_leases`).
Usage windows move with their usage records in one transaction and every write checks the
lease token, so nothing is metered twice.

Leftovers: every heartbeat compares what the provider runs (``list_workloads``) with what
should run here (instances placed on this node in an on-node state) and kills the rest: the
workloads of instances marked lost while the node was down (their GPUs were given back), of
instances that ended or whose rows are gone. A node that was down stays unschedulable until
this has been done (``node_reconciled``), so its GPUs are never offered while an old workload
still holds them.
"""

from __future__ import annotations

import logging
import random
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from aicloud.adapters.metrics.base import MetricsCollecting, Sample
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
from aicloud.products.gpuaas.lifecycle import InstanceState
from aicloud.products.gpuaas.node_store import (
    End,
    Meter,
    NodeStore,
    Provisioning,
    Running,
    Step,
    Stopping,
    WorkItem,
)
from aicloud.products.gpuaas.nodes import NodeReport
from aicloud.products.gpuaas.telemetry import metrics_workloads
from aicloud.shared import leases
from aicloud.shared.clock import Clock, SystemClock
from aicloud.shared.controllers import Backoff

log = logging.getLogger(__name__)
S = InstanceState
_PRE_START = (S.SCHEDULED, S.PROVISIONING)


@dataclass
class _Retry:
    """One instance's errors in a row (this process only: a restart starts afresh)."""

    first_at: datetime
    attempts: int = 0
    next_at: datetime | None = None


@dataclass
class NodeAgent:
    store: NodeStore
    provider: ComputeProvider
    report: Callable[[], NodeReport]
    clock: Clock = field(default_factory=SystemClock)
    meter_interval: timedelta = timedelta(seconds=30)
    stop_grace_seconds: float = 10.0
    # How often heartbeat() runs (the composition root schedules it at this interval); usage
    # windows due before the next one are reported by this one.
    heartbeat_interval: timedelta = timedelta(seconds=10)
    # Several heartbeats long: a missed renewal or two never loses a lease; a SIGKILLed
    # agent's instances are taken over after this long.
    lease_ttl: timedelta = timedelta(seconds=30)
    # Temporary errors of one instance: first retry after 0.5..1 s, doubling up to 30..60 s.
    retry_backoff: Backoff = field(default_factory=lambda: Backoff(base=1.0, cap=60.0))
    # A workload that could not be started for this long (temporary errors only) has failed.
    provision_timeout: timedelta = timedelta(minutes=10)
    jitter: random.Random = field(default_factory=random.Random)
    node_id: str | None = None
    # Reads the running workloads' GPU, CPU and memory figures for each heartbeat (built by
    # the composition root from this host's GPU source and provider); None: no metrics.
    metrics: MetricsCollecting | None = None

    def __post_init__(self) -> None:
        self.owner = leases.lease_owner_name("gpuaas-agent")
        # The leases this agent holds, by instance id; the heartbeat and reconcile threads
        # share it under the lock.
        self._held: dict[str, leases.Lease] = {}
        self._lock = threading.Lock()
        self._retries: dict[str, _Retry] = {}
        # The running instances as the last reconcile pass read them (what metrics are
        # collected for; a heartbeat before any pass sends none).
        self._running: list[WorkItem] = []

    # --- node ----------------------------------------------------------------------------

    def heartbeat(self) -> str:
        """Register or refresh this node with its current inventory and GPU health, renew
        every lease of this agent, report the usage windows falling due before the next
        heartbeat and the metrics of its running workloads, all in one store operation; then
        kill what runs here without a reason (which makes a node that was down ready
        again)."""
        report = self.report()
        samples = self._collect_metrics()
        now = self.clock.now()
        with self._lock:
            held = list(self._held.values())
        beat = self.store.heartbeat(
            report, held, ttl=self.lease_ttl, now=now,
            meter_before=now + self.heartbeat_interval - self.meter_interval, samples=samples)
        self.node_id = beat.node_id
        if beat.metrics_dropped:
            log.info("metrics: %d recorded, %d dropped by the control plane: %s",
                     beat.metric_values, beat.metrics_dropped,
                     "; ".join(beat.metrics_problems[:3]))
        self._renewed(held, list(beat.kept))
        self.kill_leftovers()
        return self.node_id

    def _collect_metrics(self) -> list[Sample]:
        """This node's samples for the heartbeat (its running instances, its free GPUs);
        none when collecting fails: metrics never cost the node its heartbeat."""
        if self.metrics is None:
            return []
        with self._lock:
            running = [inst for inst in self._running if inst.id in self._held]
        try:
            return self.metrics.collect(metrics_workloads(running, self.provider.name))
        except Exception:
            log.exception("cannot collect metrics; the heartbeat goes without them")
            return []

    def _renewed(self, sent: list[leases.Lease], kept: list[leases.Lease]) -> None:
        renewed = {lease.row_id: lease for lease in kept}
        with self._lock:
            for lease in sent:
                if self._held.get(lease.row_id) != lease:
                    continue  # ended or re-claimed by the reconcile pass meanwhile
                if lease.row_id in renewed:
                    self._held[lease.row_id] = renewed[lease.row_id]
                else:
                    log.warning("instance %s: lease lost (expired and taken, or row gone)",
                                lease.row_id)
                    del self._held[lease.row_id]

    def kill_leftovers(self) -> list[str]:
        """Kill every workload of the provider that should not run on this node; returns
        their refs. Those that no instance of this node has are also removed (nothing can
        read their logs here); those of known instances are kept, ended, so their logs stay
        readable.

        The provider is asked BEFORE the store: a workload that reconcile_once is creating
        right now already has its row in ``provisioning`` on this node, so it is never taken
        for a leftover. A down node gets no placements, so for it the rows read are final
        and, once every leftover is dead, it is marked ready."""
        assert self.node_id is not None
        handles = self.provider.list_workloads()
        check = self.store.leftovers([h.ref for h in handles])
        killed, failed = [], False
        for handle in handles:
            verdict = check.verdicts.get(handle.ref, "kill")
            if verdict in ("keep", "ended"):
                continue
            try:
                if self._kill(handle, forget=verdict == "forget"):
                    killed.append(handle.ref)
            except ProviderError as e:
                failed = True
                log.warning("leftover workload %s: cannot kill it yet: %s", handle.ref, e)
        if killed:
            self.store.record_kills(killed)
        if check.was_down and not failed:
            self.store.node_reconciled(killed)
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

    def release_leases(self) -> int:
        """Hand back every lease of this agent (a clean stop), in one operation: the next
        agent of this node takes over at once instead of after ``lease_ttl``."""
        with self._lock:
            held = list(self._held.values())
            self._held.clear()
        if not held:
            return 0
        return self.store.release(held)

    def held(self) -> list[str]:
        """The instances this agent holds a lease on."""
        with self._lock:
            return sorted(self._held)

    # --- instances -----------------------------------------------------------------------

    def reconcile_once(self) -> int:
        """One pass over the instances of this node; returns how many needed something (a
        claim, a step, an end, a retry). Idle running instances cost a provider status
        call each and no write."""
        if self.node_id is None:
            self.heartbeat()
        now = self.clock.now()
        rows = self.store.work()
        self._forget_gone(rows)
        with self._lock:
            self._running = [inst for inst in rows if inst.state == S.RUNNING.value]
        acted = self._claim_free(rows, now)
        for inst in rows:
            with self._lock:
                lease = self._held.get(inst.id)
            if lease is None:
                continue  # another agent's
            retry = self._retries.get(inst.id)
            if retry is not None and retry.next_at is not None and now < retry.next_at:
                continue  # backing off
            try:
                if self._handle(lease, inst, now):
                    acted += 1
            except Exception as exc:
                acted += 1
                self._on_error(lease, inst, exc, now)
            else:
                self._retries.pop(inst.id, None)
        return acted

    def _forget_gone(self, rows: list[WorkItem]) -> None:
        """Drop the leases of instances that ended (a cancel, the node monitor) or were taken
        by another agent after this one's lease expired."""
        current = {inst.id: inst.lock_token for inst in rows}
        with self._lock:
            for row_id, lease in list(self._held.items()):
                if current.get(row_id) != lease.token:
                    del self._held[row_id]
                    self._retries.pop(row_id, None)

    def _claim_free(self, rows: list[WorkItem], now: datetime) -> int:
        """Lease the instances nobody holds (new ones, or those of an agent that died); a
        write only when there are some."""
        with self._lock:
            free = [inst.id for inst in rows if inst.id not in self._held and (
                inst.lock_expires_at is None or inst.lock_expires_at <= now)]
        if not free:
            return 0
        claimed = self.store.claim(free, owner=self.owner, ttl=self.lease_ttl)
        with self._lock:
            for lease in claimed:
                self._held[lease.row_id] = lease
        return len(claimed)

    def _forget(self, row_id: str) -> None:
        with self._lock:
            self._held.pop(row_id, None)
        self._retries.pop(row_id, None)

    def _step(self, lease: leases.Lease, step: Step) -> bool:
        """Write ``step`` on the leased row; False when the lease was lost or the row moved
        on meanwhile (a user's cancel, the node monitor). A row the step ends is forgotten."""
        result = self.store.step(lease, step)
        if result.released:
            self._forget(lease.row_id)
        return result.applied

    def _handle(self, lease: leases.Lease, inst: WorkItem, now: datetime) -> bool:
        """Take the step ``inst`` needs; False when it needed none (idle and running)."""
        state = S(inst.state)
        if state is S.SCHEDULED:
            if inst.stop_requested:  # defensive; cancels go straight to stopped
                return False
            if self._step(lease, Provisioning(provider=self.provider.name)):
                self._provision(lease, inst)
        elif state is S.PROVISIONING:
            self._provision(lease, inst)
        elif state is S.RUNNING:
            if not inst.stop_requested:
                return self._observe(lease, inst, now)
            if self._step(lease, Stopping()):
                self._stop(lease, inst)
        elif state is S.STOPPING:
            self._stop(lease, inst)
        return True

    def _on_error(self, lease: leases.Lease, inst: WorkItem, exc: Exception,
                  now: datetime) -> None:
        """A step of ``inst`` failed: fail it when the error is permanent (or provisioning has
        failed for ``provision_timeout``), else retry it after a backoff."""
        retry = self._retries.setdefault(inst.id, _Retry(first_at=now))
        retry.attempts += 1
        state = S(inst.state)
        # What failed was a stop when one was asked (the snapshot may still say running).
        stopping = state is S.STOPPING or inst.stop_requested
        reason = None
        if not stopping:
            if isinstance(exc, ProviderError) and not exc.temporary:
                reason = f"provider {self.provider.name} refused: {exc}"
            elif state in _PRE_START and now - retry.first_at >= self.provision_timeout:
                reason = (f"provider {self.provider.name} kept failing for "
                          f"{int((now - retry.first_at).total_seconds())}s "
                          f"({retry.attempts} attempts): {exc}")
        if reason is not None:
            try:
                self._end(lease, S.FAILED, reason, now)
                self._forget(inst.id)
                return
            except Exception:
                log.exception("instance %s: cannot record its failure yet", inst.id)
        delay = self.retry_backoff.delay(retry.attempts, self.jitter)
        retry.next_at = now + timedelta(seconds=delay)
        log.warning("instance %s (%s): %s; retry %d in %.1fs", inst.id, state.value,
                    exc if isinstance(exc, ProviderError) else repr(exc), retry.attempts,
                    delay, exc_info=not isinstance(exc, ProviderError))

    def retry_of(self, instance_id: str) -> _Retry | None:
        """This agent's backoff state of an instance (None: no error in a row)."""
        return self._retries.get(instance_id)

    def _spec(self, inst: WorkItem) -> WorkloadSpec:
        return WorkloadSpec(
            workload_id=inst.id, kind=WorkloadKind(inst.template),
            gpus=GpuAssignment(inst.gpu_count, inst.gpu_model, inst.gpu_indices),
            command=inst.command)

    def _provision(self, lease: leases.Lease, inst: WorkItem) -> None:
        """Create and start the workload (errors go to _on_error), then record it running."""
        handle = self.provider.create(self._spec(inst))
        status = self.provider.start(handle)
        endpoint = None
        if (WorkloadKind(inst.template) in SERVING_KINDS
                and isinstance(self.provider, SupportsEndpoints)):
            endpoint = self.provider.endpoint(handle).url
        now = self.clock.now()
        if not self._step(lease, Running(provider=handle.provider, ref=handle.ref,
                                         endpoint=endpoint, started_at=now)):
            return
        if status.phase is WorkloadPhase.EXITED:
            # A short workload may end before start() returns: it ran, so record its end now.
            self._exited(lease, status, now)

    def _handle_of(self, inst: WorkItem) -> WorkloadHandle:
        return WorkloadHandle(inst.provider or self.provider.name, inst.provider_ref or inst.id)

    def _observe(self, lease: leases.Lease, inst: WorkItem, now: datetime) -> bool:
        """A running instance: ask the provider (no write while it runs); record its end.
        Usage is the heartbeat's; a window late by half a heartbeat (heartbeats failing or
        slower than metering) is reported here instead."""
        try:
            status = self.provider.status(self._handle_of(inst))
        except WorkloadNotFound:
            self._end(lease, S.LOST, "the workload vanished from the node", now)
            return True
        if status.phase is WorkloadPhase.EXITED:
            self._exited(lease, status, _within(status.finished_at, inst.last_metered_at, now))
            return True
        late = self.meter_interval + self.heartbeat_interval / 2
        if inst.last_metered_at is not None and now - inst.last_metered_at >= late:
            self._step(lease, Meter(until=now))
            return True
        return False

    def _exited(self, lease: leases.Lease, status: WorkloadStatus, end: datetime) -> None:
        if status.exit_code == 0:
            self._end(lease, S.SUCCEEDED, "the workload ended by itself (exit 0)", end, 0)
        else:
            self._end(lease, S.FAILED, f"the workload exited with code {status.exit_code}: "
                      f"{status.detail}".strip(": "), end, status.exit_code)

    def _stop(self, lease: leases.Lease, inst: WorkItem) -> None:
        if inst.provider_ref is not None:
            try:
                self.provider.stop(self._handle_of(inst), grace_seconds=self.stop_grace_seconds)
            except WorkloadNotFound:
                pass  # nothing left to stop
        self._end(lease, S.STOPPED, inst.stop_reason or "stopped", self.clock.now())

    def _end(self, lease: leases.Lease, target: InstanceState, reason: str, at: datetime,
             exit_code: int | None = None) -> bool:
        return self._step(lease, End(state=target.value, reason=reason, at=at,
                                     exit_code=exit_code))


def _within(value: datetime | None, low: datetime | None, high: datetime) -> datetime:
    if value is None or (low is not None and value < low) or value > high:
        return high
    return value
