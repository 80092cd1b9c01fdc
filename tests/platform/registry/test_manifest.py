"""Product manifests: validation, the registry's conflict rules, and how the composition root
applies them to IAM (permissions) and billing (meters)."""

from __future__ import annotations

import pytest

from aicloud.platform import billing, iam, registry
from aicloud.products import gpuaas
from aicloud.runtime.products import declare_product_meters, register_products
from aicloud.shared.db import Database

P = registry.PermissionDecl


def test_invalid_manifests_name_every_problem() -> None:
    with pytest.raises(ValueError) as e:
        registry.ProductManifest(
            name="demo", description="x",
            permissions=(P("other.things.read", "x"), P("demo.things.read", " ")),
            meters=(registry.MeterDecl("Bad-Meter", "", "x"),),
            resource_types=(registry.ResourceTypeDecl("thing", "T", "x"),))
    text = str(e.value)
    for part in ("'other.things.read' must look like 'demo.<resource>.<verb>'",
                 "'demo.things.read' needs a description", "meter 'Bad-Meter'",
                 "meter 'Bad-Meter' needs a unit", "id prefix 'T'"):
        assert part in text


def test_registry_refuses_claims_on_another_products_meters_or_prefixes() -> None:
    reg = registry.Registry()
    reg.register(gpuaas.MANIFEST)
    reg.register(gpuaas.MANIFEST)  # same manifest again: no-op
    clash = registry.ProductManifest(
        name="other", description="x",
        meters=(registry.MeterDecl("gpu_seconds", "second", "x"),))
    with pytest.raises(registry.ManifestConflict, match="already declared by 'gpuaas'"):
        reg.register(clash)
    with pytest.raises(LookupError):
        reg.get("nope")


def test_composition_declares_permissions_and_meters(db: Database) -> None:
    reg, catalog = registry.Registry(), iam.PermissionCatalog()
    register_products(reg, catalog)
    assert {p.name for p in gpuaas.MANIFEST.permissions} <= set(catalog.names())
    assert {p.name for p in catalog.all()
            if p.name.startswith("gpuaas.")} == {p.name for p in gpuaas.MANIFEST.permissions}
    with db.transaction() as s:
        meters = declare_product_meters(s, reg)
        names = {m.name for m in billing.list_meters(s)}
    assert {m.name for m in meters} == {"gpu_seconds", "vcpu_seconds", "memory_gib_seconds"}
    assert names >= {m.name for m in meters}
