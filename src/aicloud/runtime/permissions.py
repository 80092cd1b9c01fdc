"""Permissions declared at composition time by platform services and products.

IAM owns the catalog and declares its own; the others are declared here (by name, before
their services exist on this branch) so roles and bindings can reference them. Products
declare theirs in their manifest (runtime/products.py applies it).
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

POLICY_PERMISSIONS = [
    ("policy.quotas.read", "read the quotas that apply to a scope"),
    ("policy.quotas.write", "set or clear quotas of the scopes below one you administer"),
]


def declare_permissions(catalog: iam.PermissionCatalog = iam.CATALOG) -> None:
    for group in (AUDIT_PERMISSIONS, BILLING_PERMISSIONS, POLICY_PERMISSIONS):
        catalog.declare_many(group)


declare_permissions()
