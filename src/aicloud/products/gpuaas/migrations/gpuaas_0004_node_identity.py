"""GPUaaS: node join tokens and node credentials (nodes join over the API), and which API
process holds each node's link.

Tokens and credentials store only the SHA-256 digest of their secret.

Revision ID: gpuaas_0004
Revises: gpuaas_0003
Create Date: 2026-12-10
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from aicloud.shared.db.base import UTCDateTime

revision: str = "gpuaas_0004"
down_revision: str | Sequence[str] | None = "gpuaas_0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "gpuaas_node_join_tokens",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("digest", sa.String(length=64), nullable=False),
        sa.Column("description", sa.String(length=256), nullable=False),
        sa.Column("max_uses", sa.Integer(), nullable=False),
        sa.Column("uses", sa.Integer(), nullable=False),
        sa.Column("expires_at", UTCDateTime(timezone=True), nullable=False),
        sa.Column("revoked_at", UTCDateTime(timezone=True), nullable=True),
        sa.Column("created_by", sa.String(length=64), nullable=False),
        sa.Column("created_at", UTCDateTime(timezone=True), nullable=False),
        sa.CheckConstraint("uses >= 0 AND uses <= max_uses",
                           name=op.f("ck_gpuaas_node_join_tokens_uses_in_range")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_gpuaas_node_join_tokens")),
        sa.UniqueConstraint("digest", name=op.f("uq_gpuaas_node_join_tokens_digest")),
    )
    op.create_table(
        "gpuaas_node_credentials",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("node_id", sa.String(length=40), nullable=False),
        sa.Column("digest", sa.String(length=64), nullable=False),
        sa.Column("join_token_id", sa.String(length=40), nullable=True),
        sa.Column("created_at", UTCDateTime(timezone=True), nullable=False),
        sa.Column("revoked_at", UTCDateTime(timezone=True), nullable=True),
        sa.Column("revoked_reason", sa.String(length=256), nullable=False),
        sa.ForeignKeyConstraint(["node_id"], ["gpuaas_nodes.id"],
                                name=op.f("fk_gpuaas_node_credentials_node_id_gpuaas_nodes"),
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_gpuaas_node_credentials")),
        sa.UniqueConstraint("digest", name=op.f("uq_gpuaas_node_credentials_digest")),
    )
    op.create_index(op.f("ix_gpuaas_node_credentials_node_id"), "gpuaas_node_credentials",
                    ["node_id"], unique=False)
    op.create_table(
        "gpuaas_node_links",
        sa.Column("node_id", sa.String(length=40), nullable=False),
        sa.Column("replica_id", sa.String(length=64), nullable=False),
        sa.Column("internal_url", sa.String(length=512), nullable=False),
        sa.Column("epoch", sa.BigInteger(), nullable=False),
        sa.Column("connected_at", UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["node_id"], ["gpuaas_nodes.id"],
                                name=op.f("fk_gpuaas_node_links_node_id_gpuaas_nodes"),
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("node_id", name=op.f("pk_gpuaas_node_links")),
    )


def downgrade() -> None:
    op.drop_table("gpuaas_node_links")
    op.drop_index(op.f("ix_gpuaas_node_credentials_node_id"),
                  table_name="gpuaas_node_credentials")
    op.drop_table("gpuaas_node_credentials")
    op.drop_table("gpuaas_node_join_tokens")
