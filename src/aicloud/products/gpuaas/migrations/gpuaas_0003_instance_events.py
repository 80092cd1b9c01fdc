"""GPUaaS: instance events (idle warnings, idle stops and deletions with their evidence).

Revision ID: gpuaas_0003
Revises: gpuaas_0002
Create Date: 2026-12-10
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from aicloud.shared.db.base import UTCDateTime

revision: str = "gpuaas_0003"
down_revision: str | Sequence[str] | None = "gpuaas_0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "gpuaas_instance_events",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("instance_id", sa.String(length=40), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("message", sa.String(length=512), nullable=False),
        sa.Column("details", sa.JSON(), nullable=False),
        sa.Column("at", UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["instance_id"], ["gpuaas_instances.id"],
                                name=op.f("fk_gpuaas_instance_events_instance_id_gpuaas_instances"),
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_gpuaas_instance_events")),
    )
    op.create_index("ix_gpuaas_instance_events_instance_at", "gpuaas_instance_events",
                    ["instance_id", "kind", "at"])


def downgrade() -> None:
    op.drop_table("gpuaas_instance_events")
