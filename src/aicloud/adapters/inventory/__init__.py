"""GPU inventory: what GPUs a node has. Import the contract from ``.base``; the composition
root builds a source with ``auto.inventory_from_config`` (NVML, static, or auto)."""

from aicloud.adapters.inventory.base import (
    GpuDevice,
    GpuInventory,
    InventoryReport,
    InventoryUnavailable,
)

__all__ = ["GpuDevice", "GpuInventory", "InventoryReport", "InventoryUnavailable"]
