"""Metrics composition: which GPU source this host reads (NVML, or the simulation of the
profile's declared GPUs), joined with the compute provider's per-workload CPU and memory."""

from __future__ import annotations

import logging

from aicloud.adapters.inventory.base import InventoryUnavailable
from aicloud.adapters.metrics.base import GpuMetricsSource, MetricsCollecting
from aicloud.adapters.metrics.collector import MetricsCollector
from aicloud.adapters.metrics.nvml import NvmlGpuMetrics
from aicloud.adapters.metrics.simulated import SimulatedGpu, SimulatedGpuMetrics
from aicloud.adapters.providers.base import ComputeProvider, SupportsUsage
from aicloud.runtime.adapters import gpu_inventory
from aicloud.shared.config import Settings

log = logging.getLogger(__name__)


def gpu_metrics_source(settings: Settings) -> GpuMetricsSource | None:
    """NVML when the inventory came from NVML; the simulation when the profile's GPUs are
    declared simulated; none for GPUs declared by hand as real (nothing could read them, and
    invented figures would pass for hardware)."""
    try:
        report = gpu_inventory(settings).discover()
    except InventoryUnavailable as exc:
        log.warning("no GPU metrics: %s", exc)
        return None
    if report.source == "nvml":
        return NvmlGpuMetrics()
    if report.simulated:
        return SimulatedGpuMetrics([SimulatedGpu(d.index, d.model, d.memory_gib, d.uuid)
                                    for d in report.devices])
    return None


def metrics_collector(settings: Settings, provider: ComputeProvider) -> MetricsCollecting:
    """What the node agent's heartbeat calls: ``collect(workloads) -> samples``."""
    return MetricsCollector(gpu_metrics_source(settings),
                            provider if isinstance(provider, SupportsUsage) else None)
