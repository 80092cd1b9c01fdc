"""Pick the inventory source from the profile: NVML when it finds devices, else static."""

from __future__ import annotations

from aicloud.adapters.inventory.base import GpuInventory, InventoryReport, InventoryUnavailable
from aicloud.adapters.inventory.nvml import NvmlInventory
from aicloud.adapters.inventory.static import StaticInventory
from aicloud.shared.config import InventoryConfig


class AutoInventory:
    """NVML if it reports devices; otherwise the static list, saying why NVML was not used."""

    source = "auto"

    def __init__(self, nvml: GpuInventory, static: GpuInventory):
        self.nvml = nvml
        self.static = static

    def discover(self) -> InventoryReport:
        try:
            return self.nvml.discover()
        except InventoryUnavailable as nvml_error:
            reason = str(nvml_error)
        try:
            report = self.static.discover()
        except InventoryUnavailable as static_error:
            raise InventoryUnavailable(
                f"no GPU inventory: {reason}; and {static_error}") from static_error
        return InventoryReport(report.source, report.simulated, report.devices,
                               f"{report.detail} ({reason})")


def inventory_from_config(config: InventoryConfig) -> GpuInventory:
    """The inventory the profile asks for (``providers.inventory.source``)."""
    if config.source == "nvml":
        return NvmlInventory()
    if config.source == "static":
        return StaticInventory(config)
    return AutoInventory(NvmlInventory(), StaticInventory(config))
