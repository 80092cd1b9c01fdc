"""GPU readings from the NVIDIA driver through NVML (the nvidia-ml-py package).

Only a small part of the NVML API is used (:class:`NvmlMetricsApi`); tests drive it with a
fake implementing the same surface, since CI machines have no GPU. NVML stays initialised
between readings (an init costs tens of milliseconds on a loaded host); a device that cannot
be read this time is left out of the reading, not reported as zeros.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from typing import Any, Protocol

from aicloud.adapters.metrics.base import GpuReading, MetricsUnavailable

log = logging.getLogger(__name__)
SOURCE = "nvml"
NVML_TEMPERATURE_GPU = 0  # nvml.h


class NvmlMetricsApi(Protocol):
    """The part of pynvml this module calls."""

    NVMLError: type[Exception]

    def nvmlInit(self) -> None: ...
    def nvmlShutdown(self) -> None: ...
    def nvmlDeviceGetCount(self) -> int: ...
    def nvmlDeviceGetHandleByIndex(self, index: int) -> Any: ...
    def nvmlDeviceGetUUID(self, handle: Any) -> str | bytes: ...
    def nvmlDeviceGetUtilizationRates(self, handle: Any) -> Any: ...  # .gpu in %
    def nvmlDeviceGetMemoryInfo(self, handle: Any) -> Any: ...  # .used, .total in bytes
    def nvmlDeviceGetPowerUsage(self, handle: Any) -> int: ...  # milliwatts
    def nvmlDeviceGetTemperature(self, handle: Any, sensor: int) -> int: ...  # °C


def load_pynvml() -> NvmlMetricsApi:
    try:
        import pynvml  # type: ignore[import-not-found,unused-ignore]
    except ImportError as exc:
        raise MetricsUnavailable(
            "nvidia-ml-py is not installed (pip install 'aicloud[gpu]')") from exc
    return pynvml  # type: ignore[no-any-return]


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value


class NvmlGpuMetrics:
    source = SOURCE
    simulated = False

    def __init__(self, api: NvmlMetricsApi | None = None):
        self._api = api
        self._ready = False
        self._lock = threading.Lock()

    def _open(self) -> NvmlMetricsApi:
        api = self._api or load_pynvml()
        self._api = api
        if not self._ready:
            try:
                api.nvmlInit()
            except api.NVMLError as exc:
                raise MetricsUnavailable(f"NVML not available: {exc}") from exc
            self._ready = True
        return api

    def close(self) -> None:
        with self._lock:
            if self._ready and self._api is not None:
                self._api.nvmlShutdown()
            self._ready = False

    def read(self, activity: Mapping[int, float], now: float) -> list[GpuReading]:
        with self._lock:
            api = self._open()
            try:
                count = api.nvmlDeviceGetCount()
            except api.NVMLError as exc:
                raise MetricsUnavailable(f"NVML cannot count devices: {exc}") from exc
            readings = []
            for index in range(count):
                try:
                    readings.append(self._device(api, index))
                except api.NVMLError as exc:
                    log.warning("GPU %d: cannot read its metrics: %s", index, exc)
            return readings

    @staticmethod
    def _device(api: NvmlMetricsApi, index: int) -> GpuReading:
        handle = api.nvmlDeviceGetHandleByIndex(index)
        memory = api.nvmlDeviceGetMemoryInfo(handle)
        return GpuReading(
            index=index, uuid=_text(api.nvmlDeviceGetUUID(handle)), source=SOURCE,
            utilization_pct=float(api.nvmlDeviceGetUtilizationRates(handle).gpu),
            memory_used_bytes=int(memory.used), memory_total_bytes=int(memory.total),
            power_watts=api.nvmlDeviceGetPowerUsage(handle) / 1000.0,
            temperature_c=float(api.nvmlDeviceGetTemperature(handle, NVML_TEMPERATURE_GPU)))
