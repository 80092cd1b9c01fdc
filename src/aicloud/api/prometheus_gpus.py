"""Per-GPU gauges on ``/metrics`` for operators, read from the metrics store at scrape time.

Labels: node (id), gpu (node-local index), org and project (of the instance holding the GPU;
empty for a free GPU), source (nvml or simulated). Cardinality is bounded by the pool, not by
tenants' activity: one series per physical GPU and metric, whoever holds it (no instance id
label; the store keeps only the latest holder's value per GPU), and only GPUs reported within
the last ``fresh`` (a GPU of a node gone silent drops out). At most GPUs x 4 series.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from aicloud.platform import metrics
from aicloud.shared.db import Database

log = logging.getLogger(__name__)
LABELS = ["node", "gpu", "org", "project", "source"]
HELP = {
    "gpu_utilization_pct": ("aicloud_gpu_utilization_percent",
                            "GPU utilization over the last sample interval"),
    "gpu_memory_used_bytes": ("aicloud_gpu_memory_used_bytes", "GPU memory in use"),
    "gpu_power_watts": ("aicloud_gpu_power_watts", "GPU board power draw"),
    "gpu_temperature_c": ("aicloud_gpu_temperature_celsius", "GPU die temperature"),
}


def _org_project(scope_path: str) -> tuple[str, str]:
    parts = [p for p in scope_path.split("/") if p]
    org = parts[0] if parts else ""
    project = next((p for p in parts if p.startswith("prj_")), "")
    return org, project


class GpuGauges(Collector):
    def __init__(self, db: Database, now: Callable[[], datetime],
                 fresh: timedelta = timedelta(minutes=2)):
        self.db = db
        self.now = now
        self.fresh = fresh

    def describe(self) -> Iterator[GaugeMetricFamily]:
        # Declared without reading the database (registration must not query).
        for name, text in HELP.values():
            yield GaugeMetricFamily(name, text, labels=LABELS)

    def collect(self) -> Iterator[GaugeMetricFamily]:
        families = {m: GaugeMetricFamily(name, text, labels=LABELS)
                    for m, (name, text) in HELP.items()}
        try:
            with self.db.read_transaction() as session:
                gauges = metrics.current_gpu_values(session, now=self.now(), fresh=self.fresh)
        except Exception:  # a scrape never fails because the database is busy
            log.exception("cannot read GPU metrics for /metrics")
            gauges = []
        for g in gauges:
            org, project = _org_project(g.scope_path)
            families[g.metric].add_metric([g.node_id, str(g.gpu), org, project, g.source],
                                          g.value)
        yield from families.values()
