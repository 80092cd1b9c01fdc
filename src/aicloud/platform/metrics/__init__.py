"""Metrics: series of workload and GPU measurements reported by nodes, kept downsampled for a
bounded time; read back per resource (tenants) and as current per-GPU values (operators).

Product-neutral and at the bottom of the platform services: it depends on nothing but
shared, and whoever attributes resources (a product) or reads series (policy, access, the
API) sits above it.
"""

from aicloud.platform.metrics.controllers import retention_controller
from aicloud.platform.metrics.schemas import MetricsOut, Point, SeriesOut
from aicloud.platform.metrics.store import (
    GPU_METRICS,
    METRICS,
    NOT_A_GPU,
    RESOLUTION,
    Bucket,
    GpuGauge,
    Owner,
    RecordResult,
    Series,
    current_gpu_values,
    prune,
    record_samples,
    series_of,
)

__all__ = [
    "GPU_METRICS",
    "METRICS",
    "NOT_A_GPU",
    "RESOLUTION",
    "Bucket",
    "GpuGauge",
    "MetricsOut",
    "Owner",
    "Point",
    "RecordResult",
    "Series",
    "SeriesOut",
    "current_gpu_values",
    "prune",
    "record_samples",
    "retention_controller",
    "series_of",
]
