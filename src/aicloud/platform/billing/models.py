"""Billing tables. Only aicloud.platform.billing writes them.

``billing_transfers`` is append-only: database triggers refuse UPDATE and DELETE on it (see
migrations/billing_0001_money_path.py). Everything else here is either a cache derived from
transfers (account totals, rating streams) or workflow state (holds, usage rating state).
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column

from aicloud.shared.db import Base, UTCDateTime

# SQLite only auto-increments an INTEGER PRIMARY KEY; PostgreSQL wants a BIGINT identity.
SeqType = BigInteger().with_variant(Integer(), "sqlite")


class AccountModel(Base):
    __tablename__ = "billing_accounts"
    __table_args__ = (
        UniqueConstraint("owner_type", "owner_id", "purpose", "currency",
                         name="uq_billing_accounts_owner_type"),
        CheckConstraint("credit_limit >= 0", name="credit_limit_non_negative"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    type: Mapped[str] = mapped_column(String(16))  # asset | liability | revenue | expense
    currency: Mapped[str] = mapped_column(String(3))
    owner_type: Mapped[str] = mapped_column(String(16))  # platform | organization | ...
    owner_id: Mapped[str] = mapped_column(String(64))
    scope_path: Mapped[str] = mapped_column(String(512))
    purpose: Mapped[str] = mapped_column(String(32))  # wallet, revenue, funding, ...
    # Balance constraints: a floor of -credit_limit on the available balance (wallets), and
    # the strict "never below zero on its normal side" that no transfer may ever break.
    enforce_floor: Mapped[bool] = mapped_column(Boolean, default=False)
    credit_limit: Mapped[int] = mapped_column(BigInteger, default=0)
    strict_non_negative: Mapped[bool] = mapped_column(Boolean, default=False)
    # Cache of sum(transfers), written in the transaction that posts them.
    debits_posted: Mapped[int] = mapped_column(BigInteger, default=0)
    credits_posted: Mapped[int] = mapped_column(BigInteger, default=0)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    # The end of the account's last closed period (statements.close_periods): no transfer
    # touching the account is posted before it, so a closed period never changes.
    closed_through: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class PeriodClosingModel(Base):
    """An account's balance at the end of a calendar month (UTC, by posting time), written
    when the month is closed. Derived from the transfers like the balance cache and verified
    by ``ledger check``; never edited by hand.

    ``debits``/``credits``/``transfers`` are cumulative: every transfer of the account posted
    before the month's end. ``last_seq`` is the highest seq among those; ``next_seq`` is at
    most the lowest seq of the account's transfers posted at or after the month's end, so the
    next months' transfers are found by an index range instead of the whole history.
    """

    __tablename__ = "billing_period_closings"

    account_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    period: Mapped[str] = mapped_column(String(7), primary_key=True)  # YYYY-MM
    debits: Mapped[int] = mapped_column(BigInteger)
    credits: Mapped[int] = mapped_column(BigInteger)
    transfers: Mapped[int] = mapped_column(BigInteger)
    last_seq: Mapped[int] = mapped_column(BigInteger)
    next_seq: Mapped[int] = mapped_column(BigInteger)
    closed_at: Mapped[datetime] = mapped_column(UTCDateTime)


class TransferModel(Base):
    __tablename__ = "billing_transfers"
    __table_args__ = (
        CheckConstraint("amount > 0", name="amount_positive"),
        CheckConstraint("debit_account_id <> credit_account_id", name="distinct_accounts"),
        # Each account's history, in posting order, indexed by the accounts' 8-byte keys
        # rather than their 31-character ids: index entries a quarter the size make posting
        # (the ledger's hottest write) markedly faster.
        Index("ix_billing_transfers_debit_key_seq", "debit_key", "seq"),
        Index("ix_billing_transfers_credit_key_seq", "credit_key", "seq"),
        # Partial indexes: most transfers have no usage, hold or reversal link, and an index
        # entry per NULL would cost every posting for nothing.
        *(Index(f"{'uq' if unique else 'ix'}_billing_transfers_{col}", col, unique=unique,
                sqlite_where=text(f"{col} IS NOT NULL"),
                postgresql_where=text(f"{col} IS NOT NULL"))
          for col, unique in (("usage_id", True), ("hold_id", False),
                              ("reverses_transfer_id", True))),
    )

    seq: Mapped[int] = mapped_column(SeqType, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(40), unique=True)
    debit_account_id: Mapped[str] = mapped_column(String(40))
    credit_account_id: Mapped[str] = mapped_column(String(40))
    amount: Mapped[int] = mapped_column(BigInteger)
    currency: Mapped[str] = mapped_column(String(3))
    idempotency_key: Mapped[str] = mapped_column(String(255), unique=True)
    reason: Mapped[str] = mapped_column(String(32))
    usage_id: Mapped[str | None] = mapped_column(String(40), nullable=True)
    hold_id: Mapped[str | None] = mapped_column(String(40), nullable=True)
    cause_type: Mapped[str | None] = mapped_column(String(32), nullable=True)
    cause_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    # A correction names what it reverses; each transfer can be reversed once.
    reverses_transfer_id: Mapped[str | None] = mapped_column(String(40), nullable=True)
    metadata_json: Mapped[str] = mapped_column(Text, default="{}")
    posted_at: Mapped[datetime] = mapped_column(UTCDateTime)
    # ledger.account_key() of the two accounts: a hash, so no look-up or counter is needed
    # to fill them; queries match the key and the id, so a collision can never mix accounts.
    debit_key: Mapped[int] = mapped_column(BigInteger)
    credit_key: Mapped[int] = mapped_column(BigInteger)


class HoldModel(Base):
    __tablename__ = "billing_holds"
    __table_args__ = (
        CheckConstraint("amount > 0", name="amount_positive"),
        CheckConstraint("posted_amount >= 0 AND posted_amount <= amount",
                        name="posted_within_amount"),
        Index("ix_billing_holds_account_id_status", "account_id", "status"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    account_id: Mapped[str] = mapped_column(String(40))
    counter_account_id: Mapped[str] = mapped_column(String(40))
    amount: Mapped[int] = mapped_column(BigInteger)
    currency: Mapped[str] = mapped_column(String(3))
    status: Mapped[str] = mapped_column(String(16))  # pending | posted | voided | expired
    posted_amount: Mapped[int] = mapped_column(BigInteger, default=0)
    idempotency_key: Mapped[str] = mapped_column(String(255), unique=True)
    reason: Mapped[str] = mapped_column(String(32))
    cause_type: Mapped[str | None] = mapped_column(String(32), nullable=True)
    cause_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    closed_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class MeterModel(Base):
    __tablename__ = "billing_meters"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    unit: Mapped[str] = mapped_column(String(32))  # the integer base unit of quantities
    dimension: Mapped[str | None] = mapped_column(String(32), nullable=True)  # e.g. gpu_model
    product: Mapped[str] = mapped_column(String(64))
    description: Mapped[str] = mapped_column(String(256), default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class PriceListModel(Base):
    """One immutable version of a price list. A price change is a new version."""

    __tablename__ = "billing_price_lists"
    __table_args__ = (
        UniqueConstraint("org_id", "version", name="uq_billing_price_lists_org_id"),
        CheckConstraint("discount_bp >= 0 AND discount_bp <= 10000", name="discount_range"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    org_id: Mapped[str] = mapped_column(String(64))  # "" for the default list
    version: Mapped[int] = mapped_column(Integer)
    currency: Mapped[str] = mapped_column(String(3))
    effective_from: Mapped[datetime] = mapped_column(UTCDateTime)
    discount_bp: Mapped[int] = mapped_column(Integer, default=0)  # basis points off default
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    created_by: Mapped[str | None] = mapped_column(String(64), nullable=True)


class PriceModel(Base):
    __tablename__ = "billing_prices"
    __table_args__ = (
        UniqueConstraint("price_list_id", "meter", "dimension_value",
                         name="uq_billing_prices_price_list_id"),
        CheckConstraint("unit_price >= 0", name="unit_price_non_negative"),
        CheckConstraint("per_quantity > 0", name="per_quantity_positive"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    price_list_id: Mapped[str] = mapped_column(String(40))
    meter: Mapped[str] = mapped_column(String(64))
    dimension_value: Mapped[str] = mapped_column(String(64), default="")  # "" = any
    # unit_price micro-units per per_quantity base units (e.g. 2.50 USD per 3600 seconds).
    unit_price: Mapped[int] = mapped_column(BigInteger)
    per_quantity: Mapped[int] = mapped_column(BigInteger)


# UsageRecordModel.state
WAITING, RATED, UNPRICED = 0, 1, 2


class UsageRecordModel(Base):
    __tablename__ = "billing_usage_records"
    __table_args__ = (
        CheckConstraint("quantity > 0", name="quantity_positive"),
        CheckConstraint("window_end > window_start", name="window_ordered"),
        # What the rater claims (waiting) and what requeue_unpriced reads, in seq order:
        # partial indexes, so rating a record deletes its entry and inserts none (a rated
        # record, nearly every row, is in neither). Queries spell the state as a literal,
        # which both databases need to match a partial index.
        *(Index(f"ix_billing_usage_records_{name}_seq", "seq",
                sqlite_where=text(f"state = {state}"), postgresql_where=text(f"state = {state}"))
          for name, state in (("waiting", 0), ("unpriced", 2))),
        Index("ix_billing_usage_records_scope_path_window_start", "scope_path", "window_start"),
    )

    seq: Mapped[int] = mapped_column(SeqType, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(40), unique=True)
    idempotency_key: Mapped[str] = mapped_column(String(255), unique=True)
    fingerprint: Mapped[str] = mapped_column(String(64))
    resource_id: Mapped[str] = mapped_column(String(64))
    org_id: Mapped[str] = mapped_column(String(64))
    project_id: Mapped[str] = mapped_column(String(64))
    scope_path: Mapped[str] = mapped_column(String(512))
    principal_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    meter: Mapped[str] = mapped_column(String(64))
    dimension_value: Mapped[str] = mapped_column(String(64), default="")
    quantity: Mapped[int] = mapped_column(BigInteger)
    window_start: Mapped[datetime] = mapped_column(UTCDateTime)
    window_end: Mapped[datetime] = mapped_column(UTCDateTime)
    source: Mapped[str] = mapped_column(String(64))
    received_at: Mapped[datetime] = mapped_column(UTCDateTime)
    # Rating state: 0 = waiting, 1 = rated. Set in the transaction that posts the charge.
    state: Mapped[int] = mapped_column(Integer, default=0)
    stream_id: Mapped[str | None] = mapped_column(String(40), nullable=True)
    price_id: Mapped[str | None] = mapped_column(String(40), nullable=True)
    currency: Mapped[str | None] = mapped_column(String(3), nullable=True)
    charge: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    rated_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class RatingStreamModel(Base):
    """Cumulative quantity and charge of one resource's usage at one price.

    Each record's charge is round(price * cumulative quantity) minus what the stream was
    already charged, so the sum of the charges is the rounded price of the total, exactly.
    """

    __tablename__ = "billing_rating_streams"
    __table_args__ = (
        UniqueConstraint("resource_id", "meter", "dimension_value", "price_id", "discount_bp",
                         name="uq_billing_rating_streams_resource_id"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    resource_id: Mapped[str] = mapped_column(String(64))
    meter: Mapped[str] = mapped_column(String(64))
    dimension_value: Mapped[str] = mapped_column(String(64))
    price_id: Mapped[str] = mapped_column(String(40))
    discount_bp: Mapped[int] = mapped_column(Integer)
    quantity: Mapped[int] = mapped_column(BigInteger, default=0)
    charged: Mapped[int] = mapped_column(BigInteger, default=0)


class BudgetModel(Base):
    """A monthly spending budget for an organization, department or project scope."""

    __tablename__ = "billing_budgets"
    __table_args__ = (CheckConstraint("amount > 0", name="amount_positive"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    scope_path: Mapped[str] = mapped_column(String(512), index=True)
    currency: Mapped[str] = mapped_column(String(3))
    amount: Mapped[int] = mapped_column(BigInteger)  # per calendar month, micro-units
    thresholds: Mapped[str] = mapped_column(String(128))  # JSON list of percents
    action: Mapped[str] = mapped_column(String(32))  # notify | block_launches | stop_workloads
    webhook_url: Mapped[str | None] = mapped_column(String(1024), nullable=True)
    webhook_secret: Mapped[str | None] = mapped_column(String(256), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)


class BudgetAlertModel(Base):
    __tablename__ = "billing_budget_alerts"
    __table_args__ = (
        UniqueConstraint("budget_id", "period", "threshold",
                         name="uq_billing_budget_alerts_budget_id"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    budget_id: Mapped[str] = mapped_column(String(40))
    scope_path: Mapped[str] = mapped_column(String(512), index=True)
    period: Mapped[str] = mapped_column(String(7))  # YYYY-MM
    threshold: Mapped[int] = mapped_column(Integer)
    spend: Mapped[int] = mapped_column(BigInteger)
    amount: Mapped[int] = mapped_column(BigInteger)
    action: Mapped[str] = mapped_column(String(32))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class WebhookDeliveryModel(Base):
    __tablename__ = "billing_webhook_deliveries"
    __table_args__ = (Index("ix_billing_webhook_deliveries_status_next_attempt_at", "status",
                            "next_attempt_at"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    alert_id: Mapped[str] = mapped_column(String(40))
    budget_id: Mapped[str] = mapped_column(String(40))
    url: Mapped[str] = mapped_column(String(1024))
    body: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16))  # pending | delivered | failed
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime)
    last_error: Mapped[str | None] = mapped_column(String(512), nullable=True)
    delivered_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
