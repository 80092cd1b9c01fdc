"""Product manifests: what a product declares to the platform, as typed data.

A product (GPUaaS today, the Slurm and RKE2 apps later) describes its permissions, meters and
resource types in one :class:`ProductManifest`. The registry only holds manifests; the
composition root applies them (permissions into IAM's catalog, meters into billing), so this
package imports neither.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_NAME = re.compile(r"^[a-z][a-z0-9_]{1,31}$")
_PERMISSION = re.compile(r"^[a-z][a-z0-9_]*\.[a-z][a-z0-9_-]*\.[a-z][a-z0-9_-]*$")
_METER = re.compile(r"^[a-z][a-z0-9_]{1,63}$")
_PREFIX = re.compile(r"^[a-z]{2,8}$")


@dataclass(frozen=True)
class PermissionDecl:
    name: str  # "<product>.<resource>.<verb>"
    description: str


@dataclass(frozen=True)
class MeterDecl:
    name: str
    unit: str  # the base unit quantities are counted in, e.g. "second"
    description: str
    dimension: str | None = None  # e.g. "gpu_model": prices may differ per value


@dataclass(frozen=True)
class ResourceTypeDecl:
    name: str  # e.g. "instance"
    id_prefix: str  # e.g. "inst" (ids look like inst_01J...)
    description: str


@dataclass(frozen=True)
class ProductManifest:
    name: str
    description: str
    permissions: tuple[PermissionDecl, ...] = ()
    meters: tuple[MeterDecl, ...] = ()
    resource_types: tuple[ResourceTypeDecl, ...] = ()

    def __post_init__(self) -> None:
        problems: list[str] = []
        if not _NAME.match(self.name):
            problems.append(f"product name {self.name!r} must match {_NAME.pattern}")
        for p in self.permissions:
            if not _PERMISSION.match(p.name) or not p.name.startswith(self.name + "."):
                problems.append(f"permission {p.name!r} must look like "
                                f"'{self.name}.<resource>.<verb>'")
            if not p.description.strip():
                problems.append(f"permission {p.name!r} needs a description")
        for m in self.meters:
            if not _METER.match(m.name):
                problems.append(f"meter {m.name!r} must match {_METER.pattern}")
            if not m.unit.strip():
                problems.append(f"meter {m.name!r} needs a unit")
        for r in self.resource_types:
            if not _PREFIX.match(r.id_prefix):
                problems.append(f"resource type {r.name!r}: id prefix {r.id_prefix!r} must "
                                "be 2-8 lowercase letters")
        for what, names in (("permission", [p.name for p in self.permissions]),
                            ("meter", [m.name for m in self.meters]),
                            ("id prefix", [r.id_prefix for r in self.resource_types])):
            dupes = sorted({n for n in names if names.count(n) > 1})
            if dupes:
                problems.append(f"duplicate {what}s: {', '.join(dupes)}")
        if problems:
            raise ValueError(f"manifest of {self.name!r} is invalid: " + "; ".join(problems))


class ManifestConflict(ValueError):
    """Two products claim the same name, meter or id prefix."""


class Registry:
    """The manifests of the products composed into this process, by name."""

    def __init__(self) -> None:
        self._manifests: dict[str, ProductManifest] = {}

    def register(self, manifest: ProductManifest) -> ProductManifest:
        """Add a manifest; registering the same one again is a no-op."""
        existing = self._manifests.get(manifest.name)
        if existing is not None:
            if existing != manifest:
                raise ManifestConflict(f"product {manifest.name!r} is already registered "
                                       "with a different manifest")
            return existing
        for other in self._manifests.values():
            meters = {m.name for m in other.meters} & {m.name for m in manifest.meters}
            prefixes = ({r.id_prefix for r in other.resource_types}
                        & {r.id_prefix for r in manifest.resource_types})
            if meters or prefixes:
                raise ManifestConflict(
                    f"product {manifest.name!r} claims {sorted(meters | prefixes)} already "
                    f"declared by {other.name!r}")
        self._manifests[manifest.name] = manifest
        return manifest

    def get(self, name: str) -> ProductManifest:
        try:
            return self._manifests[name]
        except KeyError:
            raise LookupError(f"no product {name!r} is registered") from None

    def all(self) -> list[ProductManifest]:
        return [self._manifests[n] for n in sorted(self._manifests)]


REGISTRY = Registry()
