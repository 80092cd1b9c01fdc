"""Billing: closing balances per account and calendar month, and each account's closed-through
instant (no transfer is posted into a closed month); usage records' (state, seq) index becomes
partial indexes of waiting and unpriced records (rating a record then only deletes an entry).

Revision ID: billing_0004
Revises: billing_0003
Create Date: 2026-12-02
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from aicloud.shared.db.base import UTCDateTime

revision: str = "billing_0004"
down_revision: str | Sequence[str] | None = "billing_0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "billing_period_closings",
        sa.Column("account_id", sa.String(length=40), nullable=False),
        sa.Column("period", sa.String(length=7), nullable=False),
        sa.Column("debits", sa.BigInteger(), nullable=False),
        sa.Column("credits", sa.BigInteger(), nullable=False),
        sa.Column("transfers", sa.BigInteger(), nullable=False),
        sa.Column("last_seq", sa.BigInteger(), nullable=False),
        sa.Column("next_seq", sa.BigInteger(), nullable=False),
        sa.Column("closed_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("account_id", "period", name=op.f("pk_billing_period_closings")),
    )
    op.add_column("billing_accounts", sa.Column("closed_through", UTCDateTime(), nullable=True))
    op.drop_index("ix_billing_usage_records_state_seq", table_name="billing_usage_records")
    for name, state in (("waiting", 0), ("unpriced", 2)):
        op.create_index(f"ix_billing_usage_records_{name}_seq", "billing_usage_records",
                        ["seq"], unique=False, sqlite_where=sa.text(f"state = {state}"),
                        postgresql_where=sa.text(f"state = {state}"))


def downgrade() -> None:
    for name in ("waiting", "unpriced"):
        op.drop_index(f"ix_billing_usage_records_{name}_seq", table_name="billing_usage_records")
    op.create_index("ix_billing_usage_records_state_seq", "billing_usage_records",
                    ["state", "seq"], unique=False)
    with op.batch_alter_table("billing_accounts") as batch:
        batch.drop_column("closed_through")
    op.drop_table("billing_period_closings")
