"""Timing helpers and the report format shared by every benchmark.

A benchmark module's ``run()`` measures our path and its baseline in the same run and returns
``Measurement``s; ``bench/__main__.py`` calls it several times, so each figure is reported as
a range over runs with the machine's load average beside it (see ``Summary``).
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field

# Below this many samples a p99 is a handful of points, not a percentile.
MIN_SAMPLES_FOR_P99 = 10_000


@dataclass
class Measurement:
    name: str
    value: float
    unit: str
    baseline_name: str | None = None
    baseline_value: float | None = None
    higher_is_better: bool = True
    target: str | None = None

    @property
    def ratio(self) -> float | None:
        if self.baseline_value in (None, 0) or self.value == 0:
            return None
        assert self.baseline_value is not None
        if self.higher_is_better:
            return self.value / self.baseline_value
        return self.baseline_value / self.value  # >1 means faster than the baseline


@dataclass
class Summary:
    """One benchmark figure over several runs: ranges, not a lucky best."""

    first: Measurement
    values: list[float] = field(default_factory=list)
    baselines: list[float] = field(default_factory=list)
    ratios: list[float] = field(default_factory=list)
    loads: list[float] = field(default_factory=list)

    def add(self, m: Measurement, load: float) -> None:
        self.values.append(m.value)
        if m.baseline_value is not None:
            self.baselines.append(m.baseline_value)
        if m.ratio is not None:
            self.ratios.append(m.ratio)
        self.loads.append(load)

    def as_dict(self) -> dict[str, object]:
        m = self.first
        return {"name": m.name, "unit": m.unit, "values": self.values,
                "baseline": m.baseline_name, "baseline_values": self.baselines,
                "ratios": self.ratios, "higher_is_better": m.higher_is_better,
                "target": m.target, "load_average_1m": self.loads}


def load_average() -> float:
    """The 1-minute load average (what else the machine was doing)."""
    return os.getloadavg()[0]


def span(values: list[float], fmt: str) -> str:
    if not values:
        return "-"
    lo, hi = min(values), max(values)
    return format(lo, fmt) if lo == hi else f"{format(lo, fmt)}..{format(hi, fmt)}"


def rate(fn: Callable[[], object], *, n: int, repeat: int = 5) -> float:
    """Best-of-``repeat`` operations per second of calling ``fn`` ``n`` times."""
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        best = min(best, time.perf_counter() - t0)
    return n / best


def percentiles(samples: list[float]) -> dict[str, float]:
    """p50/p95 always; p99 only from at least MIN_SAMPLES_FOR_P99 samples."""
    qs = statistics.quantiles(samples, n=100, method="inclusive")
    out = {"p50": qs[49], "p95": qs[94]}
    if len(samples) >= MIN_SAMPLES_FOR_P99:
        out["p99"] = qs[98]
    return out
