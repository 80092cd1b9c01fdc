"""Policy: idle policies (stop an idle GPU resource, delete it after it stayed stopped).

Revision ID: policy_0002
Revises: policy_0001
Create Date: 2026-12-10
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from aicloud.shared.db.base import UTCDateTime

revision: str = "policy_0002"
down_revision: str | Sequence[str] | None = "policy_0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "policy_idle_policies",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("scope_id", sa.String(length=64), nullable=False),
        sa.Column("scope_path", sa.String(length=512), nullable=False),
        sa.Column("resource_class", sa.String(length=64), nullable=False),
        sa.Column("threshold_pct", sa.Float(), nullable=False),
        sa.Column("idle_minutes", sa.Integer(), nullable=False),
        sa.Column("warn_minutes", sa.Integer(), nullable=False),
        sa.Column("delete_after_days", sa.Integer(), nullable=True),
        sa.Column("updated_at", UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_by", sa.String(length=64), nullable=False),
        sa.CheckConstraint("threshold_pct > 0 AND threshold_pct <= 100",
                           name=op.f("ck_policy_idle_policies_threshold_range")),
        sa.CheckConstraint("idle_minutes >= 5 AND warn_minutes >= 1 AND warn_minutes < "
                           "idle_minutes", name=op.f("ck_policy_idle_policies_minutes_range")),
        sa.CheckConstraint("delete_after_days IS NULL OR delete_after_days >= 1",
                           name=op.f("ck_policy_idle_policies_delete_after_range")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_policy_idle_policies")),
        sa.UniqueConstraint("scope_id", "resource_class",
                            name="uq_policy_idle_policies_scope_id"),
    )
    op.create_index(op.f("ix_policy_idle_policies_scope_path"), "policy_idle_policies",
                    ["scope_path"])


def downgrade() -> None:
    op.drop_table("policy_idle_policies")
