"""Billing API models (pydantic), ready for routes: amounts are integer micro-units."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field, StrictInt

from aicloud.platform.billing.money import MAX_AMOUNT, MAX_QUANTITY

Amount = Field(gt=0, le=MAX_AMOUNT, description="integer micro-units of the currency")


class Account(BaseModel):
    id: str
    type: Literal["asset", "liability", "revenue", "expense"]
    currency: str
    owner_type: str
    owner_id: str
    scope_path: str
    purpose: str
    enforce_floor: bool
    credit_limit: int
    strict_non_negative: bool
    debits_posted: int
    credits_posted: int
    balance: int = Field(description="posted balance on the account's normal side")


class Balance(BaseModel):
    account_id: str | None = Field(description="None until the wallet's first transfer")
    currency: str
    posted: int
    held: int = Field(description="sum of open holds")
    available: int = Field(description="posted - held")
    credit_limit: int


class Transfer(BaseModel):
    id: str
    seq: int
    debit_account_id: str
    credit_account_id: str
    amount: int
    currency: str
    idempotency_key: str
    reason: str
    usage_id: str | None = None
    hold_id: str | None = None
    cause_type: str | None = None
    cause_id: str | None = None
    reverses_transfer_id: str | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)
    posted_at: datetime


class Hold(BaseModel):
    id: str
    account_id: str
    counter_account_id: str
    amount: int
    currency: str
    status: Literal["pending", "posted", "voided", "expired"]
    posted_amount: int
    reason: str
    cause_type: str | None = None
    cause_id: str | None = None
    expires_at: datetime
    created_at: datetime
    closed_at: datetime | None = None


class HoldCreate(BaseModel):
    amount: StrictInt = Amount
    currency: str
    ttl_seconds: StrictInt = Field(default=3600, gt=0, le=31 * 86400)
    reason: str = Field(default="admission", max_length=32)


class Meter(BaseModel):
    name: str = Field(pattern=r"^[a-z][a-z0-9_]{1,63}$")
    unit: str = Field(max_length=32)
    dimension: str | None = Field(default=None, max_length=32)
    product: str = Field(max_length=64)
    description: str = Field(default="", max_length=256)


class PriceIn(BaseModel):
    meter: str
    dimension_value: str = Field(default="", max_length=64)
    unit_price: StrictInt = Field(ge=0, le=MAX_AMOUNT, description="micro-units per per_quantity")
    per_quantity: StrictInt = Field(default=1, gt=0, le=MAX_QUANTITY)


class PriceListBody(BaseModel):
    """A price list version as the API receives it (the org comes from the path)."""

    currency: str
    effective_from: datetime
    discount_bp: StrictInt = Field(default=0, ge=0, le=10000,
                                   description="basis points off default")
    prices: list[PriceIn] = Field(default_factory=list)


class PriceListCreate(PriceListBody):
    org_id: str | None = Field(default=None, description="None for the default list")


class PriceList(BaseModel):
    id: str
    org_id: str | None
    version: int
    currency: str
    effective_from: datetime
    discount_bp: int
    prices: list[PriceIn]


class UsageIn(BaseModel):
    resource_id: str = Field(min_length=1, max_length=64)
    project_id: str = Field(min_length=1, max_length=64)
    scope_path: str = Field(min_length=2, max_length=512, description="/org/dep/prj")
    principal_id: str | None = Field(default=None, max_length=64)
    meter: str
    dimension_value: str = Field(default="", max_length=64)
    quantity: StrictInt = Field(gt=0, le=MAX_QUANTITY,
                                description="integer base units of the meter")
    window_start: datetime
    window_end: datetime
    idempotency_key: str = Field(min_length=1, max_length=255)
    source: str = Field(default="api", max_length=64)


class IngestResult(BaseModel):
    accepted: int = Field(description="new records stored")
    duplicates: int = Field(description="records already stored with the same payload")
    ids: list[str]


class RateResult(BaseModel):
    rated: int
    charged: int = Field(description="micro-units charged in this pass")
    transfers: int


class Discrepancy(BaseModel):
    code: str
    message: str
    subject: str | None = None


class LedgerCheck(BaseModel):
    ok: bool
    accounts: int
    transfers: int
    discrepancies: list[Discrepancy]
    # With published checkpoints (``--against``): where from, and how many were compared.
    published_sink: str | None = None
    published_checked: int | None = None


class TopUpIn(BaseModel):
    org_id: str
    amount: StrictInt = Amount
    currency: str
    idempotency_key: str = Field(min_length=1, max_length=200)
    reference: str | None = Field(default=None, max_length=128)


class AdjustmentIn(BaseModel):
    org_id: str
    amount: StrictInt = Field(description="signed micro-units: positive credits the org")
    currency: str
    idempotency_key: str = Field(min_length=1, max_length=200)
    reason: str = Field(min_length=1, max_length=256)


BudgetAction = Literal["notify", "block_launches", "stop_workloads"]


class BudgetBody(BaseModel):
    """A budget as the API receives it (the scope comes from the path)."""

    amount: StrictInt = Amount
    currency: str
    thresholds: list[StrictInt] = Field(default_factory=lambda: [50, 80, 100], min_length=1,
                                  max_length=10)
    action: BudgetAction = "notify"
    webhook_url: str | None = Field(default=None, max_length=1024)
    webhook_secret: str | None = Field(default=None, min_length=16, max_length=256,
                                       description="HMAC key; the configured one if omitted")


class BudgetCreate(BudgetBody):
    scope_path: str = Field(min_length=2, max_length=512, description="/org[/dep[/prj]]")


class Budget(BaseModel):
    id: str
    scope_path: str
    amount: int
    currency: str
    thresholds: list[int]
    action: BudgetAction
    webhook_url: str | None
    has_webhook_secret: bool
    created_at: datetime


class BudgetAlert(BaseModel):
    id: str
    budget_id: str
    scope_path: str
    period: str
    threshold: int
    spend: int
    amount: int
    action: BudgetAction
    created_at: datetime


class StatementLine(BaseModel):
    kind: Literal["usage", "top_up", "adjustment", "hold_post", "reversal", "transfer"]
    project_id: str | None = None
    meter: str | None = None
    dimension_value: str | None = None
    price_id: str | None = None
    unit_price: int | None = Field(default=None, description="micro-units per per_quantity")
    per_quantity: int | None = None
    discount_bp: int | None = None
    quantity: int | None = None
    amount: int = Field(description="signed: negative charges the wallet, positive credits it")
    transfers: int


class Statement(BaseModel):
    org_id: str
    period: str
    currency: str
    opening_balance: int
    charges: int = Field(description="sum of negative lines, as a positive number")
    credits: int = Field(description="sum of positive lines")
    closing_balance: int
    lines: list[StatementLine]


class CostRow(BaseModel):
    key: dict[str, str]
    currency: str
    amount: int
    quantity: int
    records: int


class CostReport(BaseModel):
    scope_path: str
    start: datetime
    end: datetime
    group_by: list[str]
    total: dict[str, int] = Field(description="per currency")
    rows: list[CostRow]


# --- request bodies of the REST API (the org comes from the path) ------------------------------

IdemKey = Field(default=None, min_length=1, max_length=200,
                description="the ledger idempotency key; or send the Idempotency-Key header "
                            "(both: they must be equal)")


class TopUpBody(BaseModel):
    amount: StrictInt = Amount
    currency: str
    reference: str | None = Field(default=None, max_length=128,
                                  description="e.g. the payment or invoice number")
    idempotency_key: str | None = IdemKey


class AdjustmentBody(BaseModel):
    amount: StrictInt = Field(ge=-MAX_AMOUNT, le=MAX_AMOUNT,
                              description="signed micro-units: positive credits the org")
    currency: str
    reason: str = Field(min_length=1, max_length=256)
    idempotency_key: str | None = IdemKey


class CreditLimitBody(BaseModel):
    currency: str
    credit_limit: StrictInt = Field(ge=0, le=MAX_AMOUNT)


class HoldBody(BaseModel):
    """A hold on the organization's wallet (the org comes from the path); the counter
    account is always the platform's revenue account of the currency."""

    amount: StrictInt = Amount
    currency: str
    ttl_seconds: StrictInt = Field(default=3600, ge=1, le=31 * 86400,
                                   description="the hold expires (stops reserving) after this")
    reason: str = Field(min_length=1, max_length=32, description="why, e.g. admission")
    cause_type: str | None = Field(default=None, min_length=1, max_length=32,
                                   description="what the hold is for, e.g. instance")
    cause_id: str | None = Field(default=None, min_length=1, max_length=64)
    idempotency_key: str | None = IdemKey


class HoldPostBody(BaseModel):
    amount: StrictInt | None = Field(default=None, gt=0, le=MAX_AMOUNT,
                                     description="micro-units to charge; all of it if omitted "
                                                 "(the rest is released)")
    idempotency_key: str | None = IdemKey


class UsageBatch(BaseModel):
    records: list[UsageIn] = Field(min_length=1, max_length=10_000)
