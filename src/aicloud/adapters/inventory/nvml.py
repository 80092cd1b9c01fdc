"""GPU inventory read from the NVIDIA driver through NVML (the nvidia-ml-py package).

Only a small part of the NVML API is used (:class:`NvmlApi`); tests drive the parsing with a
FakeNvml implementing the same surface, since CI machines have no GPU.
"""

from __future__ import annotations

import re
from typing import Any, Protocol

from aicloud.adapters.inventory.base import GpuDevice, InventoryReport, InventoryUnavailable

# Values of the NVML C API (nvml.h); fixed by the ABI.
NVML_ERROR_NOT_SUPPORTED = 3
NVML_ERROR_GPU_IS_LOST = 15
NVML_MEMORY_ERROR_TYPE_UNCORRECTED = 1
NVML_VOLATILE_ECC = 0

_VENDOR_WORDS = {"NVIDIA", "TESLA", "GEFORCE", "QUADRO"}
# Words that describe a variant (memory, form factor), not the model.
_VARIANT = re.compile(r"^(\d+GB|PCIE|SXM\d*|HBM\d*E?|NVL|MIG.*)$", re.IGNORECASE)


class NvmlApi(Protocol):
    """The part of pynvml this module calls."""

    NVMLError: type[Exception]

    def nvmlInit(self) -> None: ...
    def nvmlShutdown(self) -> None: ...
    def nvmlDeviceGetCount(self) -> int: ...
    def nvmlDeviceGetHandleByIndex(self, index: int) -> Any: ...
    def nvmlDeviceGetName(self, handle: Any) -> str | bytes: ...
    def nvmlDeviceGetUUID(self, handle: Any) -> str | bytes: ...
    def nvmlDeviceGetMemoryInfo(self, handle: Any) -> Any: ...  # .total in bytes
    def nvmlDeviceGetTotalEccErrors(self, handle: Any, error_type: int, counter: int) -> int: ...


def load_pynvml() -> NvmlApi:
    try:
        import pynvml  # type: ignore[import-not-found,unused-ignore]
    except ImportError as exc:
        raise InventoryUnavailable(
            "nvidia-ml-py is not installed (pip install 'aicloud[gpu]')") from exc
    return pynvml  # type: ignore[no-any-return]


def model_key(name: str) -> str:
    """The short model of a device name: 'NVIDIA H100 80GB HBM3' -> 'H100',
    'NVIDIA A100-SXM4-80GB' -> 'A100', 'NVIDIA GeForce RTX 4090' -> 'RTX 4090'."""
    words = [w for w in name.split() if w.upper() not in _VENDOR_WORDS]
    kept: list[str] = []
    for word in words:
        head, _, rest = word.partition("-")
        if _VARIANT.match(head):
            break
        kept.append(head)
        if rest:  # 'A100-SXM4-80GB': the variant follows the dash
            break
    return " ".join(kept) or name.strip()


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value


class NvmlInventory:
    source = "nvml"

    def __init__(self, api: NvmlApi | None = None):
        self._api = api

    def discover(self) -> InventoryReport:
        api = self._api or load_pynvml()
        try:
            api.nvmlInit()
        except api.NVMLError as exc:
            raise InventoryUnavailable(f"NVML not available: {exc}") from exc
        try:
            count = api.nvmlDeviceGetCount()
            if count == 0:
                raise InventoryUnavailable("NVML found no GPU devices")
            devices = tuple(self._device(api, i) for i in range(count))
        finally:
            api.nvmlShutdown()
        return InventoryReport(self.source, False, devices, f"{count} device(s) read from NVML")

    def _device(self, api: NvmlApi, index: int) -> GpuDevice:
        try:
            handle = api.nvmlDeviceGetHandleByIndex(index)
            name = _text(api.nvmlDeviceGetName(handle))
            uuid = _text(api.nvmlDeviceGetUUID(handle))
            memory_gib = round(api.nvmlDeviceGetMemoryInfo(handle).total / 2**30)
        except api.NVMLError as exc:
            # A device the driver lists but cannot query (e.g. fallen off the bus) is kept,
            # unhealthy, so placement avoids it and operators see it.
            return GpuDevice(index, "unknown", "unknown", 0, None, False,
                             f"cannot query device: {exc}")
        healthy, detail = True, ""
        try:
            uncorrected = api.nvmlDeviceGetTotalEccErrors(
                handle, NVML_MEMORY_ERROR_TYPE_UNCORRECTED, NVML_VOLATILE_ECC)
            if uncorrected:
                healthy, detail = False, f"{uncorrected} uncorrected ECC error(s) since boot"
        except api.NVMLError as exc:
            if getattr(exc, "value", None) != NVML_ERROR_NOT_SUPPORTED:
                healthy, detail = False, f"ECC query failed: {exc}"
        return GpuDevice(index, model_key(name), name, memory_gib, uuid, healthy, detail)
