"""Billing: accounts, append-only transfers, holds, meters, price lists, usage, rating streams.

Revision ID: billing_0001
Revises: 0001_base
Create Date: 2026-11-23
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from aicloud.shared.db.base import UTCDateTime

revision: str = "billing_0001"
down_revision: str | Sequence[str] | None = "0001_base"
branch_labels: str | Sequence[str] | None = ("billing",)
depends_on: str | Sequence[str] | None = None

# The ledger is append-only, and the database itself says so: any UPDATE or DELETE of a
# transfer fails whatever code path (or psql session) attempts it.
APPEND_ONLY_MESSAGE = "billing_transfers is append-only; post a reversing transfer instead"

_SQLITE_TRIGGERS = [
    f"""CREATE TRIGGER billing_transfers_no_{op_name.lower()} BEFORE {op_name}
        ON billing_transfers BEGIN SELECT RAISE(ABORT, '{APPEND_ONLY_MESSAGE}'); END"""
    for op_name in ("UPDATE", "DELETE")
]
_PG_TRIGGERS = [
    f"""CREATE FUNCTION billing_transfers_append_only() RETURNS trigger AS $$
        BEGIN RAISE EXCEPTION '{APPEND_ONLY_MESSAGE}' USING ERRCODE = 'P0001'; END;
        $$ LANGUAGE plpgsql""",
    """CREATE TRIGGER billing_transfers_append_only BEFORE UPDATE OR DELETE
        ON billing_transfers FOR EACH ROW EXECUTE FUNCTION billing_transfers_append_only()""",
]


def upgrade() -> None:
    op.create_table('billing_accounts',
    sa.Column('id', sa.String(length=40), nullable=False),
    sa.Column('type', sa.String(length=16), nullable=False),
    sa.Column('currency', sa.String(length=3), nullable=False),
    sa.Column('owner_type', sa.String(length=16), nullable=False),
    sa.Column('owner_id', sa.String(length=64), nullable=False),
    sa.Column('scope_path', sa.String(length=512), nullable=False),
    sa.Column('purpose', sa.String(length=32), nullable=False),
    sa.Column('enforce_floor', sa.Boolean(), nullable=False),
    sa.Column('credit_limit', sa.BigInteger(), nullable=False),
    sa.Column('strict_non_negative', sa.Boolean(), nullable=False),
    sa.Column('debits_posted', sa.BigInteger(), nullable=False),
    sa.Column('credits_posted', sa.BigInteger(), nullable=False),
    sa.Column('created_at', UTCDateTime(), nullable=False),
    sa.CheckConstraint('credit_limit >= 0', name=op.f('ck_billing_accounts_credit_limit_non_negative')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_billing_accounts')),
    sa.UniqueConstraint('owner_type', 'owner_id', 'purpose', 'currency', name='uq_billing_accounts_owner_type')
    )
    op.create_table('billing_holds',
    sa.Column('id', sa.String(length=40), nullable=False),
    sa.Column('account_id', sa.String(length=40), nullable=False),
    sa.Column('counter_account_id', sa.String(length=40), nullable=False),
    sa.Column('amount', sa.BigInteger(), nullable=False),
    sa.Column('currency', sa.String(length=3), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('posted_amount', sa.BigInteger(), nullable=False),
    sa.Column('idempotency_key', sa.String(length=255), nullable=False),
    sa.Column('reason', sa.String(length=32), nullable=False),
    sa.Column('cause_type', sa.String(length=32), nullable=True),
    sa.Column('cause_id', sa.String(length=64), nullable=True),
    sa.Column('expires_at', UTCDateTime(), nullable=False),
    sa.Column('created_at', UTCDateTime(), nullable=False),
    sa.Column('closed_at', UTCDateTime(), nullable=True),
    sa.CheckConstraint('amount > 0', name=op.f('ck_billing_holds_amount_positive')),
    sa.CheckConstraint('posted_amount >= 0 AND posted_amount <= amount', name=op.f('ck_billing_holds_posted_within_amount')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_billing_holds')),
    sa.UniqueConstraint('idempotency_key', name=op.f('uq_billing_holds_idempotency_key'))
    )
    op.create_index('ix_billing_holds_account_id_status', 'billing_holds', ['account_id', 'status'], unique=False)
    op.create_index(op.f('ix_billing_holds_expires_at'), 'billing_holds', ['expires_at'], unique=False)
    op.create_table('billing_meters',
    sa.Column('name', sa.String(length=64), nullable=False),
    sa.Column('unit', sa.String(length=32), nullable=False),
    sa.Column('dimension', sa.String(length=32), nullable=True),
    sa.Column('product', sa.String(length=64), nullable=False),
    sa.Column('description', sa.String(length=256), nullable=False),
    sa.Column('created_at', UTCDateTime(), nullable=False),
    sa.PrimaryKeyConstraint('name', name=op.f('pk_billing_meters'))
    )
    op.create_table('billing_price_lists',
    sa.Column('id', sa.String(length=40), nullable=False),
    sa.Column('org_id', sa.String(length=64), nullable=False),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.Column('currency', sa.String(length=3), nullable=False),
    sa.Column('effective_from', UTCDateTime(), nullable=False),
    sa.Column('discount_bp', sa.Integer(), nullable=False),
    sa.Column('created_at', UTCDateTime(), nullable=False),
    sa.Column('created_by', sa.String(length=64), nullable=True),
    sa.CheckConstraint('discount_bp >= 0 AND discount_bp <= 10000', name=op.f('ck_billing_price_lists_discount_range')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_billing_price_lists')),
    sa.UniqueConstraint('org_id', 'version', name='uq_billing_price_lists_org_id')
    )
    op.create_table('billing_prices',
    sa.Column('id', sa.String(length=40), nullable=False),
    sa.Column('price_list_id', sa.String(length=40), nullable=False),
    sa.Column('meter', sa.String(length=64), nullable=False),
    sa.Column('dimension_value', sa.String(length=64), nullable=False),
    sa.Column('unit_price', sa.BigInteger(), nullable=False),
    sa.Column('per_quantity', sa.BigInteger(), nullable=False),
    sa.CheckConstraint('per_quantity > 0', name=op.f('ck_billing_prices_per_quantity_positive')),
    sa.CheckConstraint('unit_price >= 0', name=op.f('ck_billing_prices_unit_price_non_negative')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_billing_prices')),
    sa.UniqueConstraint('price_list_id', 'meter', 'dimension_value', name='uq_billing_prices_price_list_id')
    )
    op.create_table('billing_rating_streams',
    sa.Column('id', sa.String(length=40), nullable=False),
    sa.Column('resource_id', sa.String(length=64), nullable=False),
    sa.Column('meter', sa.String(length=64), nullable=False),
    sa.Column('dimension_value', sa.String(length=64), nullable=False),
    sa.Column('price_id', sa.String(length=40), nullable=False),
    sa.Column('discount_bp', sa.Integer(), nullable=False),
    sa.Column('quantity', sa.BigInteger(), nullable=False),
    sa.Column('charged', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_billing_rating_streams')),
    sa.UniqueConstraint('resource_id', 'meter', 'dimension_value', 'price_id', 'discount_bp', name='uq_billing_rating_streams_resource_id')
    )
    op.create_table('billing_transfers',
    sa.Column('seq', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('id', sa.String(length=40), nullable=False),
    sa.Column('debit_account_id', sa.String(length=40), nullable=False),
    sa.Column('credit_account_id', sa.String(length=40), nullable=False),
    sa.Column('amount', sa.BigInteger(), nullable=False),
    sa.Column('currency', sa.String(length=3), nullable=False),
    sa.Column('idempotency_key', sa.String(length=255), nullable=False),
    sa.Column('reason', sa.String(length=32), nullable=False),
    sa.Column('usage_id', sa.String(length=40), nullable=True),
    sa.Column('hold_id', sa.String(length=40), nullable=True),
    sa.Column('cause_type', sa.String(length=32), nullable=True),
    sa.Column('cause_id', sa.String(length=64), nullable=True),
    sa.Column('reverses_transfer_id', sa.String(length=40), nullable=True),
    sa.Column('metadata_json', sa.Text(), nullable=False),
    sa.Column('posted_at', UTCDateTime(), nullable=False),
    sa.CheckConstraint('amount > 0', name=op.f('ck_billing_transfers_amount_positive')),
    sa.CheckConstraint('debit_account_id <> credit_account_id', name=op.f('ck_billing_transfers_distinct_accounts')),
    sa.PrimaryKeyConstraint('seq', name=op.f('pk_billing_transfers')),
    sa.UniqueConstraint('id', name=op.f('uq_billing_transfers_id')),
    sa.UniqueConstraint('idempotency_key', name=op.f('uq_billing_transfers_idempotency_key')),
    )
    op.create_index('ix_billing_transfers_credit_account_id_posted_at', 'billing_transfers', ['credit_account_id', 'posted_at'], unique=False)
    op.create_index('ix_billing_transfers_debit_account_id_posted_at', 'billing_transfers', ['debit_account_id', 'posted_at'], unique=False)
    for col, unique in (("usage_id", True), ("hold_id", False), ("reverses_transfer_id", True)):
        op.create_index(f"{'uq' if unique else 'ix'}_billing_transfers_{col}",
                        "billing_transfers", [col], unique=unique,
                        sqlite_where=sa.text(f"{col} IS NOT NULL"),
                        postgresql_where=sa.text(f"{col} IS NOT NULL"))
    op.create_table('billing_usage_records',
    sa.Column('seq', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('id', sa.String(length=40), nullable=False),
    sa.Column('idempotency_key', sa.String(length=255), nullable=False),
    sa.Column('fingerprint', sa.String(length=64), nullable=False),
    sa.Column('resource_id', sa.String(length=64), nullable=False),
    sa.Column('org_id', sa.String(length=64), nullable=False),
    sa.Column('project_id', sa.String(length=64), nullable=False),
    sa.Column('scope_path', sa.String(length=512), nullable=False),
    sa.Column('principal_id', sa.String(length=64), nullable=True),
    sa.Column('meter', sa.String(length=64), nullable=False),
    sa.Column('dimension_value', sa.String(length=64), nullable=False),
    sa.Column('quantity', sa.BigInteger(), nullable=False),
    sa.Column('window_start', UTCDateTime(), nullable=False),
    sa.Column('window_end', UTCDateTime(), nullable=False),
    sa.Column('source', sa.String(length=64), nullable=False),
    sa.Column('received_at', UTCDateTime(), nullable=False),
    sa.Column('state', sa.Integer(), nullable=False),
    sa.Column('stream_id', sa.String(length=40), nullable=True),
    sa.Column('price_id', sa.String(length=40), nullable=True),
    sa.Column('currency', sa.String(length=3), nullable=True),
    sa.Column('charge', sa.BigInteger(), nullable=True),
    sa.Column('rated_at', UTCDateTime(), nullable=True),
    sa.CheckConstraint('quantity > 0', name=op.f('ck_billing_usage_records_quantity_positive')),
    sa.CheckConstraint('window_end > window_start', name=op.f('ck_billing_usage_records_window_ordered')),
    sa.PrimaryKeyConstraint('seq', name=op.f('pk_billing_usage_records')),
    sa.UniqueConstraint('id', name=op.f('uq_billing_usage_records_id')),
    sa.UniqueConstraint('idempotency_key', name=op.f('uq_billing_usage_records_idempotency_key'))
    )
    op.create_index('ix_billing_usage_records_scope_path_window_start', 'billing_usage_records', ['scope_path', 'window_start'], unique=False)
    op.create_index('ix_billing_usage_records_state_seq', 'billing_usage_records', ['state', 'seq'], unique=False)

    dialect = op.get_bind().dialect.name
    for statement in _PG_TRIGGERS if dialect == "postgresql" else _SQLITE_TRIGGERS:
        op.execute(statement)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER IF EXISTS billing_transfers_append_only ON billing_transfers")
        op.execute("DROP FUNCTION IF EXISTS billing_transfers_append_only()")
    op.drop_index('ix_billing_usage_records_state_seq', table_name='billing_usage_records')
    op.drop_index('ix_billing_usage_records_scope_path_window_start', table_name='billing_usage_records')
    op.drop_table('billing_usage_records')
    for name in ("uq_billing_transfers_usage_id", "ix_billing_transfers_hold_id",
                 "uq_billing_transfers_reverses_transfer_id"):
        op.drop_index(name, table_name="billing_transfers")
    op.drop_index('ix_billing_transfers_debit_account_id_posted_at', table_name='billing_transfers')
    op.drop_index('ix_billing_transfers_credit_account_id_posted_at', table_name='billing_transfers')
    op.drop_table('billing_transfers')
    op.drop_table('billing_rating_streams')
    op.drop_table('billing_prices')
    op.drop_table('billing_price_lists')
    op.drop_table('billing_meters')
    op.drop_index(op.f('ix_billing_holds_expires_at'), table_name='billing_holds')
    op.drop_index('ix_billing_holds_account_id_status', table_name='billing_holds')
    op.drop_table('billing_holds')
    op.drop_table('billing_accounts')
