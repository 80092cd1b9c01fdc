"""The agent's side of the node operations over its link: :class:`NodeStore` as RPCs.

``call`` is the link's blocking call (``LinkClient.call``); while the link is down it
raises a temporary error and the agent's controllers retry after their backoff. The agent
reads its work without polling the control plane: the list is kept until the gateway says
it changed (a ``work.changed`` notice), this agent wrote something, or ``max_age`` passed
(leases of a dead agent expire without any write, so the list is read again now and then).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import Any

from aicloud.products.gpuaas import node_wire as wire
from aicloud.products.gpuaas.node_store import (
    Beat,
    LeftoverCheck,
    Step,
    StepResult,
    WorkItem,
)
from aicloud.products.gpuaas.nodes import NodeReport
from aicloud.shared.leases import Lease

Call = Callable[..., Any]


class LinkNodeStore:
    def __init__(self, call: Call, *, connected: Callable[[], bool] = lambda: True,
                 max_age: float = 10.0):
        self._call = call
        # Whether the link is up now: the agent's loops skip their pass while it is not,
        # instead of failing it (the link reconnects by itself).
        self.connected = connected
        self.max_age = max_age
        self._lock = threading.Lock()
        self._work: list[WorkItem] | None = None
        self._read_at = 0.0
        self._generation = 0
        self.reads = 0  # how many times the work list was fetched (tests, metrics)

    def work_changed(self) -> None:
        """The gateway's notice (or a reconnect, or this agent's own write): read the work
        list again on the next pass."""
        with self._lock:
            self._generation += 1
            self._work = None

    def heartbeat(self, report: NodeReport, held: list[Lease], *, ttl: timedelta,
                  now: datetime, meter_before: datetime,
                  samples: Sequence[dict[str, Any]] = ()) -> Beat:
        out = self._call("node.heartbeat", {
            "report": wire.report_out(report), "held": [wire.lease_out(x) for x in held],
            "ttl_seconds": ttl.total_seconds(), "now": wire.dt(now),
            "meter_before": wire.dt(meter_before), "samples": list(samples)})
        return wire.beat_in(out)

    def work(self) -> list[WorkItem]:
        with self._lock:
            if self._work is not None and time.monotonic() - self._read_at < self.max_age:
                return list(self._work)
            generation = self._generation
        items = [wire.item_in(d) for d in self._call("node.work", {})]
        with self._lock:
            self.reads += 1
            if self._generation == generation:  # no notice meanwhile: keep it
                self._work, self._read_at = items, time.monotonic()
        return items

    def _wrote(self) -> None:
        self.work_changed()

    def claim(self, instance_ids: list[str], *, owner: str, ttl: timedelta) -> list[Lease]:
        self._wrote()
        return wire.leases_in(self._call("node.claim", {
            "ids": instance_ids, "owner": owner, "ttl_seconds": ttl.total_seconds()}))

    def release(self, held: list[Lease]) -> int:
        self._wrote()
        return int(self._call("node.release", {"held": [wire.lease_out(x) for x in held]}))

    def step(self, lease: Lease, step: Step) -> StepResult:
        self._wrote()
        return wire.step_result_in(self._call("node.step", {
            "lease": wire.lease_out(lease), "step": wire.step_out(step)}))

    def leftovers(self, refs: list[str]) -> LeftoverCheck:
        return wire.leftovers_in(self._call("node.leftovers", {"refs": refs}))

    def record_kills(self, refs: list[str]) -> None:
        self._call("node.record_kills", {"refs": refs})

    def node_reconciled(self, killed: list[str]) -> None:
        self._call("node.reconciled", {"killed": killed})
