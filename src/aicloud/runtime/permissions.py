"""Permissions declared at composition time by platform services and products.

IAM owns the catalog and declares its own; the others are declared here (by name, before
their services exist on this branch) so roles and bindings can reference them. A product
adds its own the same way: ``iam.CATALOG.declare_many([...])`` when it is composed.
"""

from __future__ import annotations

from aicloud.platform import iam

AUDIT_PERMISSIONS = [
    ("audit.events.read", "read audit events"),
    ("audit.events.export", "export audit events"),
    ("audit.checkpoints.create", "create signed audit checkpoints"),
    ("audit.checkpoints.read", "read audit checkpoints and verify the chain"),
]
BILLING_PERMISSIONS = [
    ("billing.ledger.read", "read ledger transfers and balances"),
    ("billing.topups.create", "add credit"),
    ("billing.prices.read", "read the price catalog"),
    ("billing.prices.write", "change prices"),
    ("billing.budgets.read", "read budgets"),
    ("billing.budgets.write", "set budgets"),
    ("billing.usage.read", "read metered usage"),
    ("billing.usage.write", "record metered usage"),
    ("billing.statements.read", "read statements"),
    ("billing.reports.read", "read billing reports"),
    ("billing.adjustments.create", "credit or charge an organization by hand (platform scope)"),
    ("billing.credit_limits.write", "set an organization's credit limit (platform scope)"),
]
GPUAAS_PERMISSIONS = [
    ("gpuaas.instances.create", "launch GPU instances"),
    ("gpuaas.instances.read", "see GPU instances"),
    ("gpuaas.instances.stop", "stop GPU instances"),
    ("gpuaas.instances.delete", "delete GPU instances"),
    ("gpuaas.nodes.read", "see GPU nodes"),
    ("gpuaas.nodes.write", "add, drain and remove GPU nodes"),
]


def declare_permissions(catalog: iam.PermissionCatalog = iam.CATALOG) -> None:
    for group in (AUDIT_PERMISSIONS, BILLING_PERMISSIONS, GPUAAS_PERMISSIONS):
        catalog.declare_many(group)


declare_permissions()
