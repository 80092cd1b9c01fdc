"""Audit: signed checkpoints, and triggers that make events and checkpoints append-only.

Revision ID: audit_0002
Revises: audit_0001
Create Date: 2026-11-23
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from aicloud.shared.db.append_only import append_only_ddl, drop_append_only_ddl
from aicloud.shared.db.base import UTCDateTime

revision: str = "audit_0002"
down_revision: str | Sequence[str] | None = "audit_0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TABLES = ("audit_events", "audit_checkpoints")


def upgrade() -> None:
    op.create_table(
        "audit_checkpoints",
        sa.Column("id", sa.String(40), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("head_hash", sa.String(64), nullable=False),
        sa.Column("event_count", sa.BigInteger(), nullable=False),
        sa.Column("signed_at", UTCDateTime(), nullable=False),
        sa.Column("key_id", sa.String(80), nullable=False),
        sa.Column("signature", sa.String(128), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_audit_checkpoints"),
    )
    op.create_index("ix_audit_checkpoints_seq", "audit_checkpoints", ["seq"])
    dialect = op.get_bind().dialect.name
    for table in TABLES:
        for sql in append_only_ddl(dialect, table):
            op.execute(sql)


def downgrade() -> None:
    dialect = op.get_bind().dialect.name
    for table in TABLES:
        for sql in drop_append_only_ddl(dialect, table):
            op.execute(sql)
    op.drop_index("ix_audit_checkpoints_seq", table_name="audit_checkpoints")
    op.drop_table("audit_checkpoints")
