"""Billing: index each account's transfers by a compact account key, not by its id.

The two (account id, posted_at) indexes were the largest cost of posting a transfer. They
become (account key, seq) indexes over 8-byte keys, ordered as account histories are read.

Revision ID: billing_0003
Revises: billing_0002
Create Date: 2026-11-23
"""

import hashlib
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "billing_0003"
down_revision: str | Sequence[str] | None = "billing_0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_MESSAGE = "billing_transfers is append-only; post a reversing transfer instead"


def _account_key(account_id: str) -> int:
    # A frozen copy of billing.ledger.account_key as of this revision: a migration must not
    # change meaning when the code does. `aicloud ledger check` verifies every stored key.
    return int.from_bytes(hashlib.blake2b(account_id.encode(), digest_size=8).digest(), "big",
                          signed=True)


def _without_update_guard(dialect: str, work) -> None:  # type: ignore[no-untyped-def]
    """Run ``work`` with the append-only guard against UPDATE lifted, and restore it."""
    if dialect == "postgresql":
        op.execute("ALTER TABLE billing_transfers DISABLE TRIGGER billing_transfers_append_only")
        work()
        op.execute("ALTER TABLE billing_transfers ENABLE TRIGGER billing_transfers_append_only")
        return
    op.execute("DROP TRIGGER billing_transfers_no_update")
    work()
    op.execute(f"""CREATE TRIGGER billing_transfers_no_update BEFORE UPDATE
        ON billing_transfers BEGIN SELECT RAISE(ABORT, '{_MESSAGE}'); END""")


def upgrade() -> None:
    bind = op.get_bind()
    dialect = bind.dialect.name
    # NOT NULL with a placeholder default, so existing rows are valid until the backfill
    # below; the default is dropped where the database allows (SQLite cannot drop one).
    for column in ("debit_key", "credit_key"):
        op.add_column("billing_transfers", sa.Column(column, sa.BigInteger(), nullable=False,
                                                     server_default="0"))

    def backfill() -> None:
        for side in ("debit", "credit"):
            ids = [r[0] for r in bind.execute(sa.text(
                f"SELECT DISTINCT {side}_account_id FROM billing_transfers"))]
            if ids:
                bind.execute(sa.text(
                    f"UPDATE billing_transfers SET {side}_key = :key "
                    f"WHERE {side}_account_id = :account_id"),
                    [{"key": _account_key(i), "account_id": i} for i in ids])

    _without_update_guard(dialect, backfill)
    if dialect == "postgresql":
        for column in ("debit_key", "credit_key"):
            op.alter_column("billing_transfers", column, server_default=None)
    op.drop_index("ix_billing_transfers_debit_account_id_posted_at",
                  table_name="billing_transfers")
    op.drop_index("ix_billing_transfers_credit_account_id_posted_at",
                  table_name="billing_transfers")
    op.create_index("ix_billing_transfers_debit_key_seq", "billing_transfers",
                    ["debit_key", "seq"], unique=False)
    op.create_index("ix_billing_transfers_credit_key_seq", "billing_transfers",
                    ["credit_key", "seq"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_billing_transfers_credit_key_seq", table_name="billing_transfers")
    op.drop_index("ix_billing_transfers_debit_key_seq", table_name="billing_transfers")
    op.create_index("ix_billing_transfers_credit_account_id_posted_at", "billing_transfers",
                    ["credit_account_id", "posted_at"], unique=False)
    op.create_index("ix_billing_transfers_debit_account_id_posted_at", "billing_transfers",
                    ["debit_account_id", "posted_at"], unique=False)
    op.drop_column("billing_transfers", "credit_key")
    op.drop_column("billing_transfers", "debit_key")
