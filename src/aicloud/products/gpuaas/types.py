"""Instance types: the default catalog, ensured at startup, and the listing."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from aicloud.products.gpuaas.models import InstanceTypeModel
from aicloud.products.gpuaas.schemas import InstanceType

# (model, vCPUs per GPU, GiB memory per GPU)
_SHAPES = (("H100", 16, 128), ("A100", 12, 96))
DEFAULT_TYPES = tuple(
    InstanceType(name=f"gpu.{model.lower()}.{n}x", gpu_model=model, gpu_count=n,
                 vcpus=vcpus * n, memory_gib=mem * n,
                 description=f"{n} {model} GPU{'s' if n > 1 else ''}, {vcpus * n} vCPU, "
                             f"{mem * n} GiB memory")
    for model, vcpus, mem in _SHAPES for n in (1, 2, 4, 8))


def ensure_default_types(session: Session) -> int:
    """Add the default types that are missing (operators' changes to existing ones stay)."""
    have = set(session.scalars(select(InstanceTypeModel.name)))
    missing = [t for t in DEFAULT_TYPES if t.name not in have]
    session.add_all(InstanceTypeModel(**t.model_dump()) for t in missing)
    session.flush()
    return len(missing)


def list_types(session: Session) -> list[InstanceType]:
    return [InstanceType(name=t.name, gpu_model=t.gpu_model, gpu_count=t.gpu_count,
                         vcpus=t.vcpus, memory_gib=t.memory_gib, description=t.description)
            for t in session.scalars(select(InstanceTypeModel).order_by(
                InstanceTypeModel.gpu_model, InstanceTypeModel.gpu_count))]
