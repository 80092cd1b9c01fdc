"""The GPU inventory contract: which GPUs a node has, and where that knowledge came from.

A real host is read through NVML; without one, the profile's static list stands in and every
report says it is simulated, so nobody mistakes a demo for hardware.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable


@dataclass(frozen=True)
class GpuDevice:
    index: int  # node-local index, as CUDA_VISIBLE_DEVICES counts
    model: str  # short model key used for placement and prices, e.g. "H100"
    name: str  # the full name the device reports, e.g. "NVIDIA H100 80GB HBM3"
    memory_gib: int
    uuid: str | None = None
    healthy: bool = True
    health_detail: str = ""


@dataclass(frozen=True)
class InventoryReport:
    source: str  # "nvml" or "static"
    simulated: bool  # True when the devices are not read from hardware
    devices: tuple[GpuDevice, ...]
    detail: str = ""  # why this source was used, what was wrong with the others


class InventoryUnavailable(Exception):
    """This source cannot report (no driver, no library, no devices); the reason says which."""


@runtime_checkable
class GpuInventory(Protocol):
    source: str

    def discover(self) -> InventoryReport:
        """Read the devices now; raises InventoryUnavailable if this source cannot."""
        ...
