"""Access: API endpoints, their keys and the keys' shared rate buckets.

Revision ID: access_0001
Revises: 0001_base
Create Date: 2026-12-01
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from aicloud.shared.db.base import UTCDateTime

revision: str = "access_0001"
down_revision: str | Sequence[str] | None = "0001_base"
branch_labels: str | Sequence[str] | None = ("access",)
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "access_endpoints",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("name", sa.String(length=63), nullable=False),
        sa.Column("org_id", sa.String(length=64), nullable=False),
        sa.Column("project_id", sa.String(length=64), nullable=False),
        sa.Column("scope_path", sa.String(length=512), nullable=False),
        sa.Column("resource_type", sa.String(length=32), nullable=False),
        sa.Column("resource_id", sa.String(length=40), nullable=False),
        sa.Column("created_by", sa.String(length=64), nullable=False),
        sa.Column("created_at", UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_access_endpoints")),
        sa.UniqueConstraint("name", name=op.f("uq_access_endpoints_name")),
    )
    op.create_index(op.f("ix_access_endpoints_project_id"), "access_endpoints",
                    ["project_id"], unique=False)
    op.create_index(op.f("ix_access_endpoints_scope_path"), "access_endpoints",
                    ["scope_path"], unique=False)
    op.create_index(op.f("ix_access_endpoints_resource_id"), "access_endpoints",
                    ["resource_id"], unique=False)
    op.create_table(
        "access_endpoint_keys",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("endpoint_id", sa.String(length=40), nullable=False),
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("key_hash", sa.String(length=64), nullable=False),
        sa.Column("rate_limit_requests", sa.Integer(), nullable=False),
        sa.Column("rate_limit_window_seconds", sa.Integer(), nullable=False),
        sa.Column("created_by", sa.String(length=64), nullable=False),
        sa.Column("created_at", UTCDateTime(timezone=True), nullable=False),
        sa.Column("revoked_at", UTCDateTime(timezone=True), nullable=True),
        sa.CheckConstraint("rate_limit_requests > 0 AND rate_limit_window_seconds > 0",
                           name=op.f("ck_access_endpoint_keys_rate_limit_positive")),
        sa.ForeignKeyConstraint(["endpoint_id"], ["access_endpoints.id"],
                                name=op.f("fk_access_endpoint_keys_endpoint_id_access_endpoints"),
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_access_endpoint_keys")),
        sa.UniqueConstraint("key_hash", name=op.f("uq_access_endpoint_keys_key_hash")),
    )
    op.create_index(op.f("ix_access_endpoint_keys_endpoint_id"), "access_endpoint_keys",
                    ["endpoint_id"], unique=False)
    op.create_table(
        "access_rate_buckets",
        sa.Column("key_id", sa.String(length=40), nullable=False),
        sa.Column("milli_tokens", sa.BigInteger(), nullable=False),
        sa.Column("updated_us", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(["key_id"], ["access_endpoint_keys.id"],
                                name=op.f("fk_access_rate_buckets_key_id_access_endpoint_keys"),
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("key_id", name=op.f("pk_access_rate_buckets")),
    )


def downgrade() -> None:
    op.drop_table("access_rate_buckets")
    op.drop_table("access_endpoint_keys")
    op.drop_table("access_endpoints")
