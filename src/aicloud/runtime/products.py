"""Composing products: register their manifests and apply them to IAM and billing.

The registry holds manifests as data; this composition root is the one place that knows both
IAM (permission catalog) and billing (meters), so neither depends on the other.
"""

from __future__ import annotations

from sqlalchemy.orm import Session

from aicloud.platform import billing, iam, registry
from aicloud.products import gpuaas
from aicloud.shared.errors import NotFound

PRODUCT_MANIFESTS = (gpuaas.MANIFEST,)
# Product permissions that mean something only at the platform (the GPU pool's nodes): no
# organization's custom role may contain them.
PLATFORM_ONLY_PERMISSIONS = ("gpuaas.nodes.read", "gpuaas.nodes.write", "gpuaas.nodes.join")


def _instance_project(session: Session, instance_id: str) -> str | None:
    try:
        return gpuaas.get_instance_model(session, instance_id).project_id
    except NotFound:
        return None


# Product resources a binding may name ({type, id} on a project): IAM asks the product which
# project one lives in, so a binding can never name another project's resource.
RESOURCE_TYPES = (("instance", _instance_project),)


def register_products(reg: registry.Registry = registry.REGISTRY,
                      catalog: iam.PermissionCatalog = iam.CATALOG) -> None:
    """Register every product's manifest and declare its permissions (no database needed)."""
    for manifest in PRODUCT_MANIFESTS:
        reg.register(manifest)
        catalog.declare_many([(p.name, p.description) for p in manifest.permissions])
    catalog.declare_platform_only(PLATFORM_ONLY_PERMISSIONS)
    for resource_type, project_of in RESOURCE_TYPES:
        iam.register_resource_type(resource_type, project_of)


def register_deletion_guards() -> None:
    """Let IAM refuse to delete a scope where a product still runs something (IAM cannot
    import products; this root hands it their guards)."""
    iam.register_deletion_guard("gpuaas.instances", lambda session, path: [
        iam.LiveResource(kind="gpuaas.instance", id=m.id, state=m.state,
                         scope_path=m.scope_path)
        for m in gpuaas.live_instances(session, path)])


def declare_product_meters(session: Session,
                           reg: registry.Registry = registry.REGISTRY) -> list[billing.Meter]:
    """Declare every registered product's meters in billing (idempotent)."""
    return [billing.declare_meter(session, billing.Meter(
                name=m.name, unit=m.unit, dimension=m.dimension, product=manifest.name,
                description=m.description))
            for manifest in reg.all() for m in manifest.meters]


register_products()
register_deletion_guards()
