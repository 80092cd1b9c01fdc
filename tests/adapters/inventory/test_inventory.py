"""GPU inventory: the real "no NVML here" path, NVML parsing through FakeNvml, the static
profile list and the auto selector."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from aicloud.adapters.inventory.auto import AutoInventory, inventory_from_config
from aicloud.adapters.inventory.base import GpuDevice, GpuInventory, InventoryUnavailable
from aicloud.adapters.inventory.nvml import (
    NVML_ERROR_GPU_IS_LOST,
    NVML_ERROR_NOT_SUPPORTED,
    NvmlInventory,
    model_key,
)
from aicloud.adapters.inventory.static import StaticInventory
from aicloud.shared.config import GpuSpec, InventoryConfig, load_settings

SRC = Path(__file__).resolve().parents[3] / "src"


class FakeNvmlError(Exception):
    def __init__(self, value: int, message: str):
        super().__init__(message)
        self.value = value


@dataclass
class FakeGpu:
    name: str | bytes
    uuid: str
    total_bytes: int
    ecc_uncorrected: int | None = 0  # None: ECC not supported
    lost: bool = False


@dataclass
class _Mem:
    total: int


class FakeNvml:
    """Stands in for pynvml (no GPU on CI): the same small surface NvmlInventory calls."""

    NVMLError = FakeNvmlError

    def __init__(self, gpus: list[FakeGpu], init_error: str | None = None):
        self.gpus = gpus
        self.init_error = init_error
        self.initialized = 0

    def nvmlInit(self) -> None:
        if self.init_error:
            raise FakeNvmlError(9, self.init_error)
        self.initialized += 1

    def nvmlShutdown(self) -> None:
        self.initialized -= 1

    def nvmlDeviceGetCount(self) -> int:
        return len(self.gpus)

    def nvmlDeviceGetHandleByIndex(self, index: int) -> FakeGpu:
        gpu = self.gpus[index]
        if gpu.lost:
            raise FakeNvmlError(NVML_ERROR_GPU_IS_LOST, "GPU is lost")
        return gpu

    def nvmlDeviceGetName(self, handle: FakeGpu) -> str | bytes:
        return handle.name

    def nvmlDeviceGetUUID(self, handle: FakeGpu) -> str:
        return handle.uuid

    def nvmlDeviceGetMemoryInfo(self, handle: FakeGpu) -> _Mem:
        return _Mem(handle.total_bytes)

    def nvmlDeviceGetTotalEccErrors(self, handle: FakeGpu, error_type: int, counter: int) -> int:
        if handle.ecc_uncorrected is None:
            raise FakeNvmlError(NVML_ERROR_NOT_SUPPORTED, "Not Supported")
        return handle.ecc_uncorrected


GIB = 2**30


def test_without_a_driver_nvml_is_unavailable_for_real() -> None:
    """nvidia-ml-py is installed here but the machine has no NVIDIA driver."""
    with pytest.raises(InventoryUnavailable, match="NVML not available: NVML Shared Library "
                                                   "Not Found"):
        NvmlInventory().discover()


def test_without_the_package_nvml_is_unavailable_with_a_hint() -> None:
    # A real interpreter in which `import pynvml` fails (sys.modules entry None).
    code = ("import sys; sys.modules['pynvml'] = None\n"
            "from aicloud.adapters.inventory.nvml import NvmlInventory\n"
            "from aicloud.adapters.inventory.base import InventoryUnavailable\n"
            "try:\n    NvmlInventory().discover()\n"
            "except InventoryUnavailable as e:\n    print(e)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=30, env={**os.environ, "PYTHONPATH": str(SRC)})
    assert out.stdout.strip() == "nvidia-ml-py is not installed (pip install 'aicloud[gpu]')"


@pytest.mark.parametrize(("name", "model"), [
    ("NVIDIA H100 80GB HBM3", "H100"),
    ("NVIDIA H100 PCIe", "H100"),
    ("NVIDIA A100-SXM4-80GB", "A100"),
    ("NVIDIA A100 80GB PCIe", "A100"),
    ("Tesla V100-SXM2-16GB", "V100"),
    ("NVIDIA GeForce RTX 4090", "RTX 4090"),
    ("NVIDIA RTX A6000", "RTX A6000"),
    ("NVIDIA L40S", "L40S"),
    ("NVIDIA H200 NVL", "H200"),
])
def test_model_keys_from_device_names(name: str, model: str) -> None:
    assert model_key(name) == model


def test_nvml_devices_are_parsed_with_health() -> None:
    fake = FakeNvml([
        FakeGpu("NVIDIA H100 80GB HBM3", "GPU-aaa", 80 * GIB),
        FakeGpu(b"NVIDIA H100 80GB HBM3", "GPU-bbb", 80 * GIB, ecc_uncorrected=2),
        FakeGpu("NVIDIA A100-SXM4-40GB", "GPU-ccc", 40 * GIB, ecc_uncorrected=None),
        FakeGpu("NVIDIA H100 80GB HBM3", "GPU-ddd", 80 * GIB, lost=True),
    ])
    report = NvmlInventory(fake).discover()
    assert (report.source, report.simulated) == ("nvml", False)
    assert report.detail == "4 device(s) read from NVML"
    assert report.devices[0] == GpuDevice(0, "H100", "NVIDIA H100 80GB HBM3", 80, "GPU-aaa")
    assert (report.devices[1].healthy, report.devices[1].health_detail) == (
        False, "2 uncorrected ECC error(s) since boot")
    assert report.devices[2].model == "A100" and report.devices[2].healthy  # ECC unsupported
    assert not report.devices[3].healthy
    assert report.devices[3].health_detail == "cannot query device: GPU is lost"
    assert fake.initialized == 0  # shut down again


def test_nvml_with_no_devices_or_a_failing_init_is_unavailable() -> None:
    with pytest.raises(InventoryUnavailable, match="NVML found no GPU devices"):
        NvmlInventory(FakeNvml([])).discover()
    with pytest.raises(InventoryUnavailable, match="NVML not available: Driver Not Loaded"):
        NvmlInventory(FakeNvml([], init_error="Driver Not Loaded")).discover()


def _config(**kw: object) -> InventoryConfig:
    gpus = [GpuSpec(index=1, model="H100", memory_gib=80),
            GpuSpec(index=0, model="H100", memory_gib=80, uuid="GPU-s0"),
            GpuSpec(index=2, model="H100", memory_gib=80, healthy=False)]
    return InventoryConfig(**{"static_gpus": gpus, **kw})


def test_static_inventory_is_labelled_simulated() -> None:
    report = StaticInventory(_config()).discover()
    assert (report.source, report.simulated) == ("static", True)
    assert report.detail.startswith("simulated:")
    assert [d.index for d in report.devices] == [0, 1, 2]
    assert report.devices[0].uuid == "GPU-s0"
    assert (report.devices[2].healthy, report.devices[2].health_detail) == (
        False, "marked unhealthy in the profile")
    declared = StaticInventory(_config(simulated=False)).discover()
    assert not declared.simulated and declared.detail == "declared in the profile by the operator"
    with pytest.raises(ValueError, match="duplicate index"):
        StaticInventory(InventoryConfig(static_gpus=[GpuSpec(index=0, model="A", memory_gib=1),
                                                     GpuSpec(index=0, model="A", memory_gib=1)]))
    with pytest.raises(InventoryUnavailable, match="static_gpus is empty"):
        StaticInventory(InventoryConfig()).discover()


def test_auto_uses_nvml_when_it_finds_devices() -> None:
    nvml = NvmlInventory(FakeNvml([FakeGpu("NVIDIA L40S", "GPU-1", 48 * GIB)]))
    report = AutoInventory(nvml, StaticInventory(_config())).discover()
    assert report.source == "nvml" and [d.model for d in report.devices] == ["L40S"]


def test_auto_falls_back_to_static_and_says_why() -> None:
    # The real NVML path on this machine (no driver), with the dev profile's static GPUs.
    settings = load_settings("dev")
    inventory = inventory_from_config(settings.providers.inventory)
    assert isinstance(inventory, AutoInventory) and isinstance(inventory, GpuInventory)
    report = inventory.discover()
    assert (report.source, report.simulated, len(report.devices)) == ("static", True, 8)
    assert report.detail == ("simulated: GPUs declared in the profile, not read from hardware "
                             "(NVML not available: NVML Shared Library Not Found)")
    with pytest.raises(InventoryUnavailable, match=re.escape(
            "no GPU inventory: NVML found no GPU devices; and "
            "providers.inventory.static_gpus is empty")):
        AutoInventory(NvmlInventory(FakeNvml([])), StaticInventory(InventoryConfig())).discover()


def test_the_configured_source_is_honoured() -> None:
    assert isinstance(inventory_from_config(_config(source="nvml")), NvmlInventory)
    assert isinstance(inventory_from_config(_config(source="static")), StaticInventory)
