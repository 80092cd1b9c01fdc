"""Billing: monthly budgets, their threshold alerts and signed webhook deliveries.

Revision ID: billing_0002
Revises: billing_0001
Create Date: 2026-11-23
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from aicloud.shared.db.base import UTCDateTime

revision: str = "billing_0002"
down_revision: str | Sequence[str] | None = "billing_0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('billing_budget_alerts',
    sa.Column('id', sa.String(length=40), nullable=False),
    sa.Column('budget_id', sa.String(length=40), nullable=False),
    sa.Column('scope_path', sa.String(length=512), nullable=False),
    sa.Column('period', sa.String(length=7), nullable=False),
    sa.Column('threshold', sa.Integer(), nullable=False),
    sa.Column('spend', sa.BigInteger(), nullable=False),
    sa.Column('amount', sa.BigInteger(), nullable=False),
    sa.Column('action', sa.String(length=32), nullable=False),
    sa.Column('created_at', UTCDateTime(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_billing_budget_alerts')),
    sa.UniqueConstraint('budget_id', 'period', 'threshold', name='uq_billing_budget_alerts_budget_id')
    )
    op.create_index(op.f('ix_billing_budget_alerts_scope_path'), 'billing_budget_alerts', ['scope_path'], unique=False)
    op.create_table('billing_budgets',
    sa.Column('id', sa.String(length=40), nullable=False),
    sa.Column('scope_path', sa.String(length=512), nullable=False),
    sa.Column('currency', sa.String(length=3), nullable=False),
    sa.Column('amount', sa.BigInteger(), nullable=False),
    sa.Column('thresholds', sa.String(length=128), nullable=False),
    sa.Column('action', sa.String(length=32), nullable=False),
    sa.Column('webhook_url', sa.String(length=1024), nullable=True),
    sa.Column('webhook_secret', sa.String(length=256), nullable=True),
    sa.Column('created_at', UTCDateTime(), nullable=False),
    sa.Column('updated_at', UTCDateTime(), nullable=False),
    sa.CheckConstraint('amount > 0', name=op.f('ck_billing_budgets_amount_positive')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_billing_budgets'))
    )
    op.create_index(op.f('ix_billing_budgets_scope_path'), 'billing_budgets', ['scope_path'], unique=False)
    op.create_table('billing_webhook_deliveries',
    sa.Column('id', sa.String(length=40), nullable=False),
    sa.Column('alert_id', sa.String(length=40), nullable=False),
    sa.Column('budget_id', sa.String(length=40), nullable=False),
    sa.Column('url', sa.String(length=1024), nullable=False),
    sa.Column('body', sa.Text(), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('next_attempt_at', UTCDateTime(), nullable=False),
    sa.Column('last_error', sa.String(length=512), nullable=True),
    sa.Column('delivered_at', UTCDateTime(), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_billing_webhook_deliveries'))
    )
    op.create_index('ix_billing_webhook_deliveries_status_next_attempt_at', 'billing_webhook_deliveries', ['status', 'next_attempt_at'], unique=False)


def downgrade() -> None:
    op.drop_index('ix_billing_webhook_deliveries_status_next_attempt_at', table_name='billing_webhook_deliveries')
    op.drop_table('billing_webhook_deliveries')
    op.drop_index(op.f('ix_billing_budgets_scope_path'), table_name='billing_budgets')
    op.drop_table('billing_budgets')
    op.drop_index(op.f('ix_billing_budget_alerts_scope_path'), table_name='billing_budget_alerts')
    op.drop_table('billing_budget_alerts')
