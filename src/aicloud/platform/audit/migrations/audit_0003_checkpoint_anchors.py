"""Audit: checkpoints carry an ordinal and other services' contributions (the ledger digest),
so they can be published outside the database and compared with it.

Revision ID: audit_0003
Revises: audit_0002
Create Date: 2026-12-02
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "audit_0003"
down_revision: str | Sequence[str] | None = "audit_0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Plain ADD COLUMN, not a batch (table-copying) alter: on SQLite a copy would lose the
    # append-only triggers.
    op.add_column("audit_checkpoints", sa.Column("ordinal", sa.BigInteger(), nullable=True))
    op.add_column("audit_checkpoints", sa.Column("contributions", sa.Text(), nullable=True))
    op.create_index("ix_audit_checkpoints_ordinal", "audit_checkpoints", ["ordinal"],
                    unique=True)


def downgrade() -> None:
    op.drop_index("ix_audit_checkpoints_ordinal", table_name="audit_checkpoints")
    op.drop_column("audit_checkpoints", "contributions")
    op.drop_column("audit_checkpoints", "ordinal")
