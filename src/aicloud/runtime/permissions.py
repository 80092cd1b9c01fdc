"""Declaring the platform services' permissions into IAM's catalog.

Each service lists the permissions it checks in its own public module (``PERMISSIONS``); the
composition root declares them here, so roles and bindings can name them. Products declare
theirs in their manifest (runtime/products.py applies it).
"""

from __future__ import annotations

from aicloud.platform import access, audit, billing, iam, policy

# What only makes sense at the platform scope: money in and out of wallets, prices, holds
# and usage reports (products' service accounts), audit checkpoints. No organization's custom
# role may contain these (IAM's grantable set); products mark theirs in runtime/products.py.
PLATFORM_ONLY = ("billing.topups.create", "billing.prices.write", "billing.adjustments.create",
                 "billing.credit_limits.write", "billing.holds.write", "billing.usage.write",
                 "audit.checkpoints.create")


def declare_permissions(catalog: iam.PermissionCatalog = iam.CATALOG) -> None:
    for permissions in (access.PERMISSIONS, audit.PERMISSIONS, billing.PERMISSIONS,
                        policy.PERMISSIONS):
        catalog.declare_many(permissions)
    catalog.declare_platform_only(PLATFORM_ONLY)


declare_permissions()
