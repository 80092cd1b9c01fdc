"""GPUaaS: nodes, GPUs, instance types (seeded), instances, GPU assignments and
state transitions. The default instance types are seeded at startup (types.py).

Revision ID: gpuaas_0001
Revises: 0001_base
Create Date: 2026-11-23
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from aicloud.shared.db.base import UTCDateTime

revision: str = "gpuaas_0001"
down_revision: str | Sequence[str] | None = "0001_base"
branch_labels: str | Sequence[str] | None = ("gpuaas",)
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('gpuaas_instance_types',
    sa.Column('name', sa.String(length=64), nullable=False),
    sa.Column('gpu_model', sa.String(length=32), nullable=False),
    sa.Column('gpu_count', sa.Integer(), nullable=False),
    sa.Column('vcpus', sa.Integer(), nullable=False),
    sa.Column('memory_gib', sa.Integer(), nullable=False),
    sa.Column('description', sa.String(length=256), nullable=False),
    sa.CheckConstraint('gpu_count >= 0 AND vcpus > 0 AND memory_gib > 0', name=op.f('ck_gpuaas_instance_types_sizes_positive')),
    sa.PrimaryKeyConstraint('name', name=op.f('pk_gpuaas_instance_types'))
    )
    op.create_table('gpuaas_nodes',
    sa.Column('id', sa.String(length=40), nullable=False),
    sa.Column('name', sa.String(length=255), nullable=False),
    sa.Column('state', sa.String(length=16), nullable=False),
    sa.Column('labels', sa.JSON(), nullable=False),
    sa.Column('inventory_source', sa.String(length=16), nullable=False),
    sa.Column('simulated', sa.Boolean(), nullable=False),
    sa.Column('drain_deadline', UTCDateTime(timezone=True), nullable=True),
    sa.Column('state_reason', sa.String(length=512), nullable=False),
    sa.Column('last_heartbeat_at', UTCDateTime(timezone=True), nullable=False),
    sa.Column('created_at', UTCDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_gpuaas_nodes')),
    sa.UniqueConstraint('name', name=op.f('uq_gpuaas_nodes_name'))
    )
    op.create_table('gpuaas_gpus',
    sa.Column('id', sa.String(length=40), nullable=False),
    sa.Column('node_id', sa.String(length=40), nullable=False),
    sa.Column('index', sa.Integer(), nullable=False),
    sa.Column('model', sa.String(length=32), nullable=False),
    sa.Column('name', sa.String(length=128), nullable=False),
    sa.Column('memory_gib', sa.Integer(), nullable=False),
    sa.Column('uuid', sa.String(length=128), nullable=True),
    sa.Column('healthy', sa.Boolean(), nullable=False),
    sa.Column('health_detail', sa.String(length=512), nullable=False),
    sa.ForeignKeyConstraint(['node_id'], ['gpuaas_nodes.id'], name=op.f('fk_gpuaas_gpus_node_id_gpuaas_nodes'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_gpuaas_gpus')),
    sa.UniqueConstraint('node_id', 'index', name='uq_gpuaas_gpus_node_id')
    )
    op.create_table('gpuaas_instances',
    sa.Column('id', sa.String(length=40), nullable=False),
    sa.Column('name', sa.String(length=128), nullable=False),
    sa.Column('org_id', sa.String(length=64), nullable=False),
    sa.Column('project_id', sa.String(length=64), nullable=False),
    sa.Column('scope_path', sa.String(length=512), nullable=False),
    sa.Column('created_by', sa.String(length=64), nullable=False),
    sa.Column('idempotency_key', sa.String(length=255), nullable=True),
    sa.Column('instance_type', sa.String(length=64), nullable=False),
    sa.Column('gpu_model', sa.String(length=32), nullable=False),
    sa.Column('gpu_count', sa.Integer(), nullable=False),
    sa.Column('vcpus', sa.Integer(), nullable=False),
    sa.Column('memory_gib', sa.Integer(), nullable=False),
    sa.Column('template', sa.String(length=16), nullable=False),
    sa.Column('command', sa.JSON(), nullable=True),
    sa.Column('priority', sa.Integer(), nullable=False),
    sa.Column('queue_order', sa.BigInteger(), nullable=False),
    sa.Column('state', sa.String(length=16), nullable=False),
    sa.Column('state_reason', sa.String(length=512), nullable=False),
    sa.Column('state_changed_at', UTCDateTime(timezone=True), nullable=False),
    sa.Column('stop_requested_at', UTCDateTime(timezone=True), nullable=True),
    sa.Column('stop_reason', sa.String(length=512), nullable=True),
    sa.Column('node_id', sa.String(length=40), nullable=True),
    sa.Column('gpu_indices', sa.JSON(), nullable=True),
    sa.Column('provider', sa.String(length=32), nullable=True),
    sa.Column('provider_ref', sa.Text(), nullable=True),
    sa.Column('endpoint_url', sa.String(length=512), nullable=True),
    sa.Column('hold_id', sa.String(length=40), nullable=True),
    sa.Column('started_at', UTCDateTime(timezone=True), nullable=True),
    sa.Column('ended_at', UTCDateTime(timezone=True), nullable=True),
    sa.Column('last_metered_at', UTCDateTime(timezone=True), nullable=True),
    sa.Column('exit_code', sa.Integer(), nullable=True),
    sa.Column('created_at', UTCDateTime(timezone=True), nullable=False),
    sa.Column('lock_token', sa.String(length=64), nullable=True),
    sa.Column('lock_owner', sa.String(length=128), nullable=True),
    sa.Column('lock_expires_at', UTCDateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['instance_type'], ['gpuaas_instance_types.name'], name=op.f('fk_gpuaas_instances_instance_type_gpuaas_instance_types')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_gpuaas_instances')),
    sa.UniqueConstraint('project_id', 'idempotency_key', name='uq_gpuaas_instances_project_id')
    )
    op.create_index(op.f('ix_gpuaas_instances_lock_expires_at'), 'gpuaas_instances', ['lock_expires_at'], unique=False)
    op.create_index(op.f('ix_gpuaas_instances_project_id'), 'gpuaas_instances', ['project_id'], unique=False)
    op.create_index(op.f('ix_gpuaas_instances_scope_path'), 'gpuaas_instances', ['scope_path'], unique=False)
    op.create_index('ix_gpuaas_instances_state_node', 'gpuaas_instances', ['state', 'node_id'], unique=False)
    op.create_table('gpuaas_type_allowances',
    sa.Column('id', sa.String(length=40), nullable=False),
    sa.Column('scope_id', sa.String(length=64), nullable=False),
    sa.Column('type_name', sa.String(length=64), nullable=False),
    sa.ForeignKeyConstraint(['type_name'], ['gpuaas_instance_types.name'], name=op.f('fk_gpuaas_type_allowances_type_name_gpuaas_instance_types'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_gpuaas_type_allowances')),
    sa.UniqueConstraint('scope_id', 'type_name', name='uq_gpuaas_type_allowances_scope_id')
    )
    op.create_index(op.f('ix_gpuaas_type_allowances_scope_id'), 'gpuaas_type_allowances', ['scope_id'], unique=False)
    op.create_table('gpuaas_gpu_assignments',
    sa.Column('gpu_id', sa.String(length=40), nullable=False),
    sa.Column('instance_id', sa.String(length=40), nullable=False),
    sa.ForeignKeyConstraint(['gpu_id'], ['gpuaas_gpus.id'], name=op.f('fk_gpuaas_gpu_assignments_gpu_id_gpuaas_gpus'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['instance_id'], ['gpuaas_instances.id'], name=op.f('fk_gpuaas_gpu_assignments_instance_id_gpuaas_instances'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('gpu_id', name=op.f('pk_gpuaas_gpu_assignments'))
    )
    op.create_index(op.f('ix_gpuaas_gpu_assignments_instance_id'), 'gpuaas_gpu_assignments', ['instance_id'], unique=False)
    op.create_table('gpuaas_instance_transitions',
    sa.Column('id', sa.String(length=40), nullable=False),
    sa.Column('instance_id', sa.String(length=40), nullable=False),
    sa.Column('from_state', sa.String(length=16), nullable=True),
    sa.Column('to_state', sa.String(length=16), nullable=False),
    sa.Column('reason', sa.String(length=512), nullable=False),
    sa.Column('at', UTCDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['instance_id'], ['gpuaas_instances.id'], name=op.f('fk_gpuaas_instance_transitions_instance_id_gpuaas_instances'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_gpuaas_instance_transitions'))
    )
    op.create_index(op.f('ix_gpuaas_instance_transitions_instance_id'), 'gpuaas_instance_transitions', ['instance_id'], unique=False)


def downgrade() -> None:
    op.drop_table('gpuaas_instance_transitions')
    op.drop_table('gpuaas_gpu_assignments')
    op.drop_table('gpuaas_type_allowances')
    op.drop_table('gpuaas_instances')
    op.drop_table('gpuaas_gpus')
    op.drop_table('gpuaas_nodes')
    op.drop_table('gpuaas_instance_types')
