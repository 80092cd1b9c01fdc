"""The permissions billing checks, declared into IAM's catalog by the composition root."""

PERMISSIONS: list[tuple[str, str]] = [
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
    ("billing.holds.read", "read the holds on an organization's wallet"),
    ("billing.holds.write", "reserve, post and void holds on organization wallets "
                            "(platform scope)"),
]
