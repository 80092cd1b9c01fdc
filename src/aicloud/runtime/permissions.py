"""Declaring the platform services' permissions into IAM's catalog.

Each service lists the permissions it checks in its own public module (``PERMISSIONS``); the
composition root declares them here, so roles and bindings can name them. Products declare
theirs in their manifest (runtime/products.py applies it).
"""

from __future__ import annotations

from aicloud.platform import audit, billing, iam, policy


def declare_permissions(catalog: iam.PermissionCatalog = iam.CATALOG) -> None:
    for permissions in (audit.PERMISSIONS, billing.PERMISSIONS, policy.PERMISSIONS):
        catalog.declare_many(permissions)


declare_permissions()
