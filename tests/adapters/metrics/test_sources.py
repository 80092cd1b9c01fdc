"""Node-side metric sources: the simulated GPU's shapes, NVML through a fake driver, and the
collector on real workloads of the local provider (a busy loop reads busy, a sleep idle)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from aicloud.adapters.metrics.base import MetricsUnavailable, WorkloadRef
from aicloud.adapters.metrics.collector import MetricsCollector
from aicloud.adapters.metrics.nvml import NvmlGpuMetrics
from aicloud.adapters.metrics.simulated import SimulatedGpu, SimulatedGpuMetrics
from aicloud.adapters.providers.base import (
    Capability,
    GpuAssignment,
    WorkloadKind,
    WorkloadSpec,
    capabilities,
)
from aicloud.adapters.providers.local import LocalProvider

H100 = [SimulatedGpu(i, "H100", 80, f"GPU-sim-{i}") for i in range(2)]


def test_simulated_gpu_follows_its_workload_and_heats_with_a_lag() -> None:
    sim = SimulatedGpuMetrics(H100, seed=1)
    idle = sim.read({0: 0.0}, 0.0)
    assert all(r.source == "simulated" for r in idle)
    assert idle[0].utilization_pct < 1 and idle[0].memory_used_bytes > 0  # context held
    assert idle[1].memory_used_bytes == 0  # nobody holds GPU 1
    cold = idle[0].temperature_c
    # GPU 0's workload starts computing (one core): busy within seconds.
    r5 = sim.read({0: 1.0}, 5.0)[0]
    assert r5.utilization_pct > 80 and r5.power_watts > 500
    # Temperature lags power: a fraction of the way after 5 s, most of it after 5 min.
    r300 = sim.read({0: 1.0}, 300.0)[0]
    assert cold < r5.temperature_c < r300.temperature_c - 10
    assert r300.temperature_c > 75 and r300.memory_used_bytes > 0.7 * 80 * 2**30
    # It stops: utilization and power drop at once, the die cools slowly, memory is kept
    # for a while (the allocator's pool).
    after = sim.read({0: 0.0}, 310.0)[0]
    assert after.utilization_pct < 5 and after.power_watts < 100
    assert after.temperature_c > 60
    assert after.memory_used_bytes > 0.5 * 80 * 2**30
    assert json.loads(json.dumps(after.to_json()))["source"] == "simulated"


@dataclass
class _Util:
    gpu: int


@dataclass
class _Mem:
    used: int
    total: int


class FakeNvmlError(Exception):
    pass


class FakeNvml:
    """Stands in for pynvml (no GPU here): the surface NvmlGpuMetrics calls."""

    NVMLError = FakeNvmlError

    def __init__(self, broken: set[int] | None = None, init_error: bool = False):
        self.inits = 0
        self.broken = broken or set()
        self.init_error = init_error

    def nvmlInit(self) -> None:
        if self.init_error:
            raise FakeNvmlError("Driver Not Loaded")
        self.inits += 1

    def nvmlShutdown(self) -> None:
        self.inits -= 1

    def nvmlDeviceGetCount(self) -> int:
        return 2

    def nvmlDeviceGetHandleByIndex(self, index: int) -> int:
        if index in self.broken:
            raise FakeNvmlError("GPU is lost")
        return index

    def nvmlDeviceGetUUID(self, handle: int) -> bytes:
        return f"GPU-{handle}".encode()

    def nvmlDeviceGetUtilizationRates(self, handle: int) -> _Util:
        return _Util(37 + handle)

    def nvmlDeviceGetMemoryInfo(self, handle: int) -> _Mem:
        return _Mem(10 * 2**30, 80 * 2**30)

    def nvmlDeviceGetPowerUsage(self, handle: int) -> int:
        return 251_500

    def nvmlDeviceGetTemperature(self, handle: int, sensor: int) -> int:
        assert sensor == 0
        return 64


def test_nvml_readings_ignore_activity_and_skip_an_unreadable_gpu() -> None:
    api = FakeNvml(broken={1})
    source = NvmlGpuMetrics(api)
    first = source.read({0: 0.0}, 0.0)
    second = source.read({}, 1.0)
    assert api.inits == 1  # initialised once, kept open
    assert first == second and len(first) == 1
    r = first[0]
    assert (r.index, r.uuid, r.source, r.utilization_pct, r.power_watts, r.temperature_c) == (
        0, "GPU-0", "nvml", 37.0, 251.5, 64.0)
    assert (r.memory_used_bytes, r.memory_total_bytes) == (10 * 2**30, 80 * 2**30)
    source.close()
    assert api.inits == 0
    with pytest.raises(MetricsUnavailable, match="Driver Not Loaded"):
        NvmlGpuMetrics(FakeNvml(init_error=True)).read({}, 0.0)


@pytest.fixture
def provider(tmp_path: Path) -> Iterator[LocalProvider]:
    p = LocalProvider(tmp_path / "workloads")
    yield p
    for handle in p.list_workloads():  # never leave processes behind
        p.stop(handle, grace_seconds=0.5)


def test_busy_workload_reads_busy_and_sleeping_one_idle(provider: LocalProvider) -> None:
    assert Capability.USAGE in capabilities(provider)
    refs = []
    for wid, gpu, command in (("busy", 0, ("python3", "-c", "while True: pass")),
                              ("sleepy", 1, ("sleep", "600"))):
        handle = provider.create(WorkloadSpec(wid, WorkloadKind.BATCH,
                                              GpuAssignment(1, "H100", (gpu,)), command))
        provider.start(handle)
        refs.append(WorkloadRef(f"inst_{wid}", handle, (gpu,)))
    collector = MetricsCollector(SimulatedGpuMetrics(H100, seed=2), provider)
    first = collector.collect(refs)
    assert [s["cpu_cores"] for s in first] == [None, None]  # a rate needs two readings
    readings = []
    for _ in range(4):  # a few seconds: the simulated utilization lags by ~2 s
        time.sleep(1.0)
        readings = collector.collect(refs)
    samples = json.loads(json.dumps(readings))  # plain data, as it crosses the link
    busy, sleepy = (next(s for s in samples if s["resource_id"] == f"inst_{w}")
                    for w in ("busy", "sleepy"))
    # What it got depends on the host's load (2 shared cores here); what it wanted does not:
    # the simulated GPU follows the demand.
    assert busy["cpu_cores"] > 0.05 and busy["cpu_cores"] > 10 * sleepy["cpu_cores"], samples
    assert sleepy["cpu_cores"] < 0.02, sleepy
    assert busy["memory_bytes"] > 1_000_000 and sleepy["memory_bytes"] > 100_000
    assert busy["processes"] >= 1 and sleepy["processes"] >= 1
    assert busy["gpus"][0]["index"] == 0 and busy["gpus"][0]["source"] == "simulated"
    assert busy["gpus"][0]["utilization_pct"] > 60, busy
    assert sleepy["gpus"][0]["utilization_pct"] < 5, sleepy
    assert busy["gpus"][0]["power_watts"] > sleepy["gpus"][0]["power_watts"] + 300
    # Stopped: no CPU any more, and its GPU is reported as the node's own (free).
    provider.stop(refs[0].handle, grace_seconds=0.5)
    after = collector.collect(refs)
    assert [s["resource_id"] for s in after] == ["inst_sleepy", None]
    assert after[1]["gpus"][0]["index"] == 0
