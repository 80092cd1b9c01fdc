"""Metrics composition: which GPU source this host reads (NVML, or the simulation of the
profile's declared GPUs), joined with the compute provider's per-workload CPU and memory;
and the controllers of metrics retention and idle policies."""

from __future__ import annotations

import logging
from datetime import timedelta

from aicloud.adapters.inventory.base import InventoryUnavailable
from aicloud.adapters.metrics.base import GpuMetricsSource, MetricsCollecting
from aicloud.adapters.metrics.collector import MetricsCollector
from aicloud.adapters.metrics.nvml import NvmlGpuMetrics
from aicloud.adapters.metrics.simulated import SimulatedGpu, SimulatedGpuMetrics
from aicloud.adapters.providers.base import ComputeProvider, SupportsUsage
from aicloud.platform import metrics
from aicloud.products import gpuaas
from aicloud.runtime.adapters import gpu_inventory
from aicloud.shared.clock import Clock
from aicloud.shared.config import Settings
from aicloud.shared.controllers import Controller
from aicloud.shared.db import Database

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


def metrics_collector(settings: Settings, provider: ComputeProvider,
                      clock: Clock | None = None) -> MetricsCollecting:
    """What the node agent's heartbeat calls: ``collect(workloads) -> samples``. Samples are
    stamped with ``clock`` (the agent's; the system clock by default)."""
    usage = provider if isinstance(provider, SupportsUsage) else None
    if clock is None:
        return MetricsCollector(gpu_metrics_source(settings), usage)
    return MetricsCollector(gpu_metrics_source(settings), usage, wall=clock.now)


def controllers(settings: Settings, db: Database, clock: Clock) -> list[Controller]:
    """Metrics retention, and the GPUaaS idle-policy enforcer (several workers may run both:
    deletes are idempotent, and each idle step is taken under the instance's row lock)."""
    enforcer = gpuaas.IdlePolicyEnforcer(db, clock=clock)
    return [
        metrics.retention_controller(
            db, clock, retention=timedelta(days=settings.metrics_retention_days)),
        # Policies count in minutes; a pass every half minute keeps a stop within a minute of
        # its time, with one read transaction per pass when no policy exists.
        Controller(name="gpuaas-idle-policy",
                   interval_seconds=max(settings.controller_interval_seconds, 30.0),
                   run_once=enforcer.run_once),
    ]
