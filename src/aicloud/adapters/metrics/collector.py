"""The agent's metrics collector: each workload's CPU and memory (from its provider) joined
with the readings of its GPUs, as plain JSON-ready samples.

CPU use is a rate: the collector keeps each workload's last CPU-time reading and reports the
cores used since then (nothing on the first reading of a workload). What the GPU source is
told of a workload's activity is its CPU *demand* (running or waiting to run) where the
provider knows it, so a busy workload on a loaded host still reads busy. It holds that state in
memory only; an agent restart costs one sample without CPU. Calls are serialized.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from datetime import datetime

from aicloud.adapters.metrics.base import (
    GpuMetricsSource,
    GpuReading,
    MetricsUnavailable,
    Sample,
    WorkloadRef,
)
from aicloud.adapters.providers.base import SupportsUsage
from aicloud.shared.clock import utcnow

log = logging.getLogger(__name__)


class MetricsCollector:
    def __init__(self, gpus: GpuMetricsSource | None, usage: SupportsUsage | None, *,
                 monotonic: Callable[[], float] = time.monotonic,
                 wall: Callable[[], datetime] = utcnow):
        self.gpus = gpus
        self.usage = usage
        self._monotonic = monotonic
        self._wall = wall
        # ref -> (monotonic time, CPU seconds, CPU demand seconds) of the last reading
        self._last_cpu: dict[str, tuple[float, float, float | None]] = {}
        self._lock = threading.Lock()

    def collect(self, workloads: Sequence[WorkloadRef]) -> list[Sample]:
        with self._lock:
            return self._collect(workloads)

    def _collect(self, workloads: Sequence[WorkloadRef]) -> list[Sample]:
        now, at = self._monotonic(), self._wall().isoformat()
        used = {}
        # Without a usage reading the agent's word is taken for what runs here.
        running = {w.handle.ref for w in workloads}
        if self.usage is not None and workloads:
            try:
                used = dict(self.usage.usage([w.handle for w in workloads]))
                running = set(used)  # the others have ended: their GPUs are free
            except Exception:  # metrics never take the heartbeat down
                log.exception("cannot read the workloads' CPU and memory")
        cores: dict[str, float] = {}
        wants: dict[str, float] = {}
        for w in workloads:
            u = used.get(w.handle.ref)
            if u is None:
                continue
            last = self._last_cpu.get(w.handle.ref)
            self._last_cpu[w.handle.ref] = (now, u.cpu_seconds, u.cpu_demand_seconds)
            if last is not None and now > last[0]:
                cores[w.resource_id] = max(0.0, u.cpu_seconds - last[1]) / (now - last[0])
                # How busy it wants to be, independent of the host's load when known.
                wants[w.resource_id] = cores[w.resource_id]
                if u.cpu_demand_seconds is not None and last[2] is not None:
                    wants[w.resource_id] = max(
                        0.0, u.cpu_demand_seconds - last[2]) / (now - last[0])
        for ref in set(self._last_cpu) - {w.handle.ref for w in workloads}:
            del self._last_cpu[ref]  # ended: forget it
        activity = {i: wants.get(w.resource_id, 0.0)
                    for w in workloads if w.handle.ref in running for i in w.gpu_indices}
        readings: dict[int, GpuReading] = {}
        if self.gpus is not None:
            try:
                readings = {r.index: r for r in self.gpus.read(activity, now)}
            except MetricsUnavailable as exc:
                log.warning("no GPU metrics: %s", exc)
            except Exception:
                log.exception("GPU metrics source %s failed", self.gpus.source)
        samples: list[Sample] = []
        held: set[int] = set()
        for w in workloads:
            if w.handle.ref not in running:
                continue  # not running here (yet, or any more)
            u = used.get(w.handle.ref)
            held.update(w.gpu_indices)
            gpus = [readings[i].to_json() for i in w.gpu_indices if i in readings]
            c = cores.get(w.resource_id)
            samples.append({
                "resource_id": w.resource_id, "at": at,
                "cpu_cores": None if c is None else round(c, 4),
                "memory_bytes": None if u is None else u.memory_bytes,
                "processes": None if u is None else u.processes,
                "gpus": gpus})
        free = [r.to_json() for i, r in sorted(readings.items()) if i not in held]
        if free:
            samples.append({"resource_id": None, "at": at, "cpu_cores": None,
                            "memory_bytes": None, "processes": None, "gpus": free})
        return samples
