"""Registry: the product manifests composed into this process (data only; the composition
root applies them to IAM and billing)."""

from aicloud.platform.registry.manifest import (
    REGISTRY,
    ManifestConflict,
    MeterDecl,
    PermissionDecl,
    ProductManifest,
    Registry,
    ResourceTypeDecl,
)

__all__ = [
    "REGISTRY",
    "ManifestConflict",
    "MeterDecl",
    "PermissionDecl",
    "ProductManifest",
    "Registry",
    "ResourceTypeDecl",
]
