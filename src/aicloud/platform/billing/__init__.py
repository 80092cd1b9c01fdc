"""Billing: the immutable money path (metering -> rating -> ledger -> derived balance).

This module is the public surface other layers may call. Owners and usage are identified by
plain ids and scope paths ("/org_x/dep_y/prj_z") passed in by callers; billing does not look
them up in IAM. Every function takes the caller's Session and writes in its transaction.
"""

from aicloud.platform.billing.budgets import (
    EXCEEDED_TOPIC,
    create_budget,
    delete_budget,
    evaluate_budgets,
    launches_blocked,
    list_alerts,
    list_budgets,
    scope_spend,
)
from aicloud.platform.billing.catalog import (
    DEFAULT_METERS,
    PriceBook,
    create_price_list,
    declare_meter,
    get_price_list,
    list_meters,
    register_default_meters,
)
from aicloud.platform.billing.check import check_ledger
from aicloud.platform.billing.controllers import controllers, rate_until_idle
from aicloud.platform.billing.credits import adjust, set_credit_limit, top_up
from aicloud.platform.billing.exports import cost_report_csv, statement_csv
from aicloud.platform.billing.holds import create_hold, expire_holds, get_hold, post_hold, void_hold
from aicloud.platform.billing.ledger import (
    TransferSpec,
    balance,
    ensure_account,
    get_account,
    list_transfers,
    org_wallet,
    platform_account,
    post_transfers,
    reverse_transfer,
)
from aicloud.platform.billing.money import CURRENCIES, MICROS_PER_UNIT
from aicloud.platform.billing.rating import rate_batch, requeue_unpriced
from aicloud.platform.billing.reports import cost_report
from aicloud.platform.billing.schemas import (
    Account,
    AdjustmentIn,
    Balance,
    Budget,
    BudgetAlert,
    BudgetCreate,
    CostReport,
    CostRow,
    Discrepancy,
    Hold,
    HoldCreate,
    IngestResult,
    LedgerCheck,
    Meter,
    PriceIn,
    PriceList,
    PriceListCreate,
    RateResult,
    Statement,
    StatementLine,
    TopUpIn,
    Transfer,
    UsageIn,
)
from aicloud.platform.billing.statements import build_statement
from aicloud.platform.billing.usage import ingest_usage
from aicloud.platform.billing.webhooks import SIGNATURE_HEADER, deliver_due, sign, verify

__all__ = [
    "CURRENCIES",
    "DEFAULT_METERS",
    "EXCEEDED_TOPIC",
    "MICROS_PER_UNIT",
    "SIGNATURE_HEADER",
    "Account",
    "AdjustmentIn",
    "Balance",
    "Budget",
    "BudgetAlert",
    "BudgetCreate",
    "CostReport",
    "CostRow",
    "Discrepancy",
    "Hold",
    "HoldCreate",
    "IngestResult",
    "LedgerCheck",
    "Meter",
    "PriceBook",
    "PriceIn",
    "PriceList",
    "PriceListCreate",
    "RateResult",
    "Statement",
    "StatementLine",
    "TopUpIn",
    "Transfer",
    "TransferSpec",
    "UsageIn",
    "adjust",
    "balance",
    "build_statement",
    "check_ledger",
    "controllers",
    "cost_report",
    "cost_report_csv",
    "create_budget",
    "create_hold",
    "create_price_list",
    "declare_meter",
    "delete_budget",
    "deliver_due",
    "ensure_account",
    "evaluate_budgets",
    "expire_holds",
    "get_account",
    "get_hold",
    "get_price_list",
    "ingest_usage",
    "launches_blocked",
    "list_alerts",
    "list_budgets",
    "list_meters",
    "list_transfers",
    "org_wallet",
    "platform_account",
    "post_hold",
    "post_transfers",
    "rate_batch",
    "rate_until_idle",
    "register_default_meters",
    "requeue_unpriced",
    "reverse_transfer",
    "scope_spend",
    "set_credit_limit",
    "sign",
    "statement_csv",
    "top_up",
    "verify",
    "void_hold",
]
