"""Shared transactional outbox: events and consumer cursors.

Revision ID: events_0001
Revises: 0001_base
Create Date: 2026-11-23
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from aicloud.shared.db.base import UTCDateTime

revision: str = "events_0001"
down_revision: str | Sequence[str] | None = "0001_base"
branch_labels: str | Sequence[str] | None = ("events",)
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "events_outbox",
        sa.Column("seq", sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
                  autoincrement=True, nullable=False),
        sa.Column("id", sa.String(40), nullable=False),
        sa.Column("topic", sa.String(128), nullable=False),
        sa.Column("payload", sa.Text(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("seq", name="pk_events_outbox"),
        sa.UniqueConstraint("id", name="uq_events_outbox_id"),
    )
    op.create_index("ix_events_outbox_topic", "events_outbox", ["topic"])
    op.create_table(
        "events_cursors",
        sa.Column("consumer", sa.String(128), nullable=False),
        sa.Column("position", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("consumer", name="pk_events_cursors"),
    )


def downgrade() -> None:
    op.drop_table("events_cursors")
    op.drop_index("ix_events_outbox_topic", table_name="events_outbox")
    op.drop_table("events_outbox")
