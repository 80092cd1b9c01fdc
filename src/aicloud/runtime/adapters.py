"""Concrete adapters chosen from the profile. Only the composition root imports them; every
other layer sees the family's ``base`` interface."""

from __future__ import annotations

from aicloud.adapters.inventory.auto import inventory_from_config
from aicloud.adapters.inventory.base import GpuInventory
from aicloud.shared.config import Settings


def gpu_inventory(settings: Settings) -> GpuInventory:
    """The GPU inventory source of ``providers.inventory`` (auto, nvml or static)."""
    return inventory_from_config(settings.providers.inventory)
