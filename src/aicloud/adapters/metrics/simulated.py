"""SIMULATED GPU readings, for hosts without GPUs (demos, CI, kind).

Nothing here is read from hardware: every reading says ``source: "simulated"``. The shapes
are made to behave like a real GPU under its workload, so dashboards, alerts and the idle
policy can be exercised end to end:

- utilization follows the workload's CPU use (a workload that computes keeps its GPU busy;
  one that sleeps leaves it idle): one CPU core busy reads as a saturated GPU;
- memory: a context (~0.5 GiB) as soon as a workload holds the GPU, growing with load to
  ~75 % of the card, and released slowly (frameworks keep their allocator's pool);
- power: idle draw (~10 % of the board's limit) plus load, with the same short lag as the
  utilization;
- temperature: a first-order lag behind power (time constant ~60 s), from ~30 °C idle to
  ~80 °C at full power: it keeps rising after load starts and cools slowly after it stops.
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from aicloud.adapters.metrics.base import GpuReading

SOURCE = "simulated"
# Board power limits (W) of the models a profile usually declares; others get DEFAULT_TDP.
TDP_WATTS = {"H100": 700.0, "H200": 700.0, "B200": 1000.0, "A100": 400.0, "L40S": 350.0,
             "A10": 150.0, "L4": 72.0, "T4": 70.0}
DEFAULT_TDP = 300.0
AMBIENT_C, FULL_POWER_C = 30.0, 80.0
UTIL_LAG_S, MEMORY_RELEASE_S, THERMAL_LAG_S = 2.0, 120.0, 60.0
CONTEXT_BYTES = 512 * 2**20


@dataclass(frozen=True)
class SimulatedGpu:
    index: int
    model: str
    memory_gib: int
    uuid: str | None = None


@dataclass
class _State:
    util: float = 0.0  # 0..1
    memory_share: float = 0.0  # of the card, excluding the context
    power: float = 0.0
    temperature: float = AMBIENT_C
    at: float | None = None


def _approach(value: float, target: float, dt: float, tau: float) -> float:
    """First-order lag: after ``dt`` seconds, ``value`` has moved towards ``target`` by the
    share a system with time constant ``tau`` would have."""
    return target + (value - target) * math.exp(-max(dt, 0.0) / tau)


class SimulatedGpuMetrics:
    """Readings of the GPUs a profile declares, derived from their workloads' activity."""

    source = SOURCE
    simulated = True

    def __init__(self, gpus: Sequence[SimulatedGpu], *, seed: int | None = None):
        self.gpus = tuple(sorted(gpus, key=lambda g: g.index))
        self._state = {g.index: _State() for g in self.gpus}
        self._rng = random.Random(seed)

    def read(self, activity: Mapping[int, float], now: float) -> list[GpuReading]:
        return [self._read(g, activity.get(g.index), now) for g in self.gpus]

    def _read(self, gpu: SimulatedGpu, cores: float | None, now: float) -> GpuReading:
        st = self._state[gpu.index]
        tdp = TDP_WATTS.get(gpu.model, DEFAULT_TDP)
        idle_w = 0.1 * tdp
        held = cores is not None
        target = min(1.0, max(0.0, cores or 0.0))
        dt = 0.0 if st.at is None else now - st.at
        if st.at is None:  # first reading: the steady state of what it sees now
            st.util, st.power = target, idle_w + (tdp - idle_w) * target
            st.temperature = AMBIENT_C + (FULL_POWER_C - AMBIENT_C) * st.power / tdp
        st.util = _approach(st.util, target, dt, UTIL_LAG_S)
        # A saturated kernel never reads exactly 100, an idle board a little above 0.
        util_pct = min(100.0, max(0.0, st.util * 100 + self._rng.uniform(-1.5, 1.5)
                                  if st.util > 0.05 else self._rng.uniform(0.0, 0.5)))
        # Memory grows with load and is given back slowly; nothing without a workload.
        wanted = 0.75 * st.util if held else 0.0
        st.memory_share = (wanted if wanted > st.memory_share
                           else _approach(st.memory_share, wanted, dt, MEMORY_RELEASE_S))
        total = gpu.memory_gib * 2**30
        used = int(min(total, (CONTEXT_BYTES if held else 0) + st.memory_share * total))
        st.power = idle_w + (tdp - idle_w) * util_pct / 100
        # The die heats towards the temperature its power would hold it at, with a lag.
        hot = AMBIENT_C + (FULL_POWER_C - AMBIENT_C) * st.power / tdp
        st.temperature = _approach(st.temperature, hot, dt, THERMAL_LAG_S)
        st.at = now
        return GpuReading(index=gpu.index, uuid=gpu.uuid, source=SOURCE,
                          utilization_pct=util_pct, memory_used_bytes=used,
                          memory_total_bytes=total, power_watts=st.power,
                          temperature_c=st.temperature)
