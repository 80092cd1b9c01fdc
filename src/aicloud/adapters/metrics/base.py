"""The node-side metrics contract: what a GPU source reads, and what the agent collects.

A host's GPUs are read through NVML; without a driver, a simulated source stands in and every
reading it makes says ``source: "simulated"``, so nobody mistakes a demo for hardware.

What the agent sends to the control plane is plain data (:data:`Sample` dicts), JSON as is,
so the same report crosses the node link unchanged. One sample per workload (its CPU, memory
and the readings of its GPUs) and one for the GPUs no workload holds (``resource_id: None``:
the node's own). The control plane attributes samples to resources; the node only says what
it saw.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from aicloud.adapters.providers.base import WorkloadHandle

# One reading of one resource at one instant, ready for json.dumps:
#   {"resource_id": "inst_..." | None, "at": "2026-01-01T00:00:00.000000+00:00",
#    "cpu_cores": 0.98 | None, "memory_bytes": 123 | None, "processes": 3 | None,
#    "gpus": [{"index": 0, "uuid": "GPU-...", "source": "nvml" | "simulated",
#              "utilization_pct": 97.0, "memory_used_bytes": ..., "memory_total_bytes": ...,
#              "power_watts": 610.0, "temperature_c": 71.5}, ...]}
Sample = dict[str, Any]


@dataclass(frozen=True)
class GpuReading:
    index: int  # node-local, as CUDA_VISIBLE_DEVICES counts
    uuid: str | None
    source: str  # "nvml" or "simulated"
    utilization_pct: float  # 0..100: share of the last interval a kernel ran
    memory_used_bytes: int
    memory_total_bytes: int
    power_watts: float
    temperature_c: float

    def to_json(self) -> dict[str, Any]:
        return {"index": self.index, "uuid": self.uuid, "source": self.source,
                "utilization_pct": round(self.utilization_pct, 2),
                "memory_used_bytes": self.memory_used_bytes,
                "memory_total_bytes": self.memory_total_bytes,
                "power_watts": round(self.power_watts, 1),
                "temperature_c": round(self.temperature_c, 1)}


class MetricsUnavailable(Exception):
    """This source cannot read (no driver, no library, no devices); the reason says which."""


@runtime_checkable
class GpuMetricsSource(Protocol):
    source: str
    simulated: bool

    def read(self, activity: Mapping[int, float], now: float) -> list[GpuReading]:
        """Every GPU of the host, now (``now``: a monotonic time in seconds).

        ``activity``: per GPU index held by a workload, how many CPU cores that workload's
        processes used since the last reading. A hardware source ignores it; the simulated
        source derives its figures from it (a workload that computes keeps its GPU busy)."""
        ...


@dataclass(frozen=True)
class WorkloadRef:
    """A workload the agent runs, as the collector needs it."""

    resource_id: str  # the control plane's id (an instance id)
    handle: WorkloadHandle
    gpu_indices: tuple[int, ...] = ()


@runtime_checkable
class MetricsCollecting(Protocol):
    def collect(self, workloads: Sequence[WorkloadRef]) -> list[Sample]:
        """One sample per workload and one for the GPUs none holds; never raises for one
        unreadable source (that part is left out)."""
        ...
