"""Policy: quotas per scope and resource key.

Revision ID: policy_0001
Revises: 0001_base
Create Date: 2026-11-23
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from aicloud.shared.db.base import UTCDateTime

revision: str = "policy_0001"
down_revision: str | Sequence[str] | None = "0001_base"
branch_labels: str | Sequence[str] | None = ("policy",)
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('policy_quotas',
    sa.Column('id', sa.String(length=40), nullable=False),
    sa.Column('scope_id', sa.String(length=64), nullable=False),
    sa.Column('scope_path', sa.String(length=512), nullable=False),
    sa.Column('resource_key', sa.String(length=64), nullable=False),
    sa.Column('limit_value', sa.BigInteger(), nullable=False),
    sa.Column('updated_at', UTCDateTime(timezone=True), nullable=False),
    sa.CheckConstraint('limit_value >= 0', name=op.f('ck_policy_quotas_limit_non_negative')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_policy_quotas')),
    sa.UniqueConstraint('scope_id', 'resource_key', name='uq_policy_quotas_scope_id')
    )
    op.create_index(op.f('ix_policy_quotas_scope_path'), 'policy_quotas', ['scope_path'], unique=False)


def downgrade() -> None:
    op.drop_table('policy_quotas')
