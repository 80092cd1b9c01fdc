"""Metrics: series and their one-minute buckets.

Revision ID: metrics_0001
Revises: 0001_base
Create Date: 2026-12-10
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from aicloud.shared.db.base import UTCDateTime

revision: str = "metrics_0001"
down_revision: str | Sequence[str] | None = "0001_base"
branch_labels: str | Sequence[str] | None = ("metrics",)
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "metrics_series",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("resource_type", sa.String(length=32), nullable=False),
        sa.Column("resource_id", sa.String(length=64), nullable=False),
        sa.Column("metric", sa.String(length=48), nullable=False),
        sa.Column("gpu", sa.Integer(), nullable=False),
        sa.Column("node_id", sa.String(length=40), nullable=False),
        sa.Column("scope_path", sa.String(length=512), nullable=False),
        sa.Column("source", sa.String(length=16), nullable=False),
        sa.Column("last_at", UTCDateTime(timezone=True), nullable=False),
        sa.Column("last_value", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_metrics_series")),
        sa.UniqueConstraint("resource_type", "resource_id", "metric", "gpu",
                            name="uq_metrics_series_resource_type"),
    )
    op.create_index("ix_metrics_series_last_at", "metrics_series", ["last_at"])
    op.create_table(
        "metrics_points",
        sa.Column("series_id", sa.Integer(), nullable=False),
        sa.Column("bucket_at", UTCDateTime(timezone=True), nullable=False),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.Column("sum", sa.Float(), nullable=False),
        sa.Column("min", sa.Float(), nullable=False),
        sa.Column("max", sa.Float(), nullable=False),
        sa.ForeignKeyConstraint(["series_id"], ["metrics_series.id"],
                                name=op.f("fk_metrics_points_series_id_metrics_series"),
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("series_id", "bucket_at", name=op.f("pk_metrics_points")),
    )
    op.create_index("ix_metrics_points_bucket_at", "metrics_points", ["bucket_at"])


def downgrade() -> None:
    op.drop_table("metrics_points")
    op.drop_table("metrics_series")
