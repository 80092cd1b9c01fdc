"""GPU inventory declared in the profile (``providers.inventory.static_gpus``)."""

from __future__ import annotations

from aicloud.adapters.inventory.base import GpuDevice, InventoryReport, InventoryUnavailable
from aicloud.shared.config import InventoryConfig


class StaticInventory:
    source = "static"

    def __init__(self, config: InventoryConfig):
        indices = [g.index for g in config.static_gpus]
        duplicates = sorted({i for i in indices if indices.count(i) > 1})
        if duplicates:
            raise ValueError(f"providers.inventory.static_gpus: duplicate index {duplicates}")
        self.config = config

    def discover(self) -> InventoryReport:
        if not self.config.static_gpus:
            raise InventoryUnavailable("providers.inventory.static_gpus is empty")
        devices = tuple(
            GpuDevice(index=g.index, model=g.model, name=g.model, memory_gib=g.memory_gib,
                      uuid=g.uuid, healthy=g.healthy,
                      health_detail="" if g.healthy else "marked unhealthy in the profile")
            for g in sorted(self.config.static_gpus, key=lambda g: g.index)
        )
        label = ("simulated: GPUs declared in the profile, not read from hardware"
                 if self.config.simulated else "declared in the profile by the operator")
        return InventoryReport(self.source, self.config.simulated, devices, label)
