"""GPUaaS: free capacity per node and GPU model, kept with every change to its inputs, and an
index over the queue in placement order.

The table is filled from the existing nodes, GPUs and assignments, so an upgraded database
places exactly as before.

Revision ID: gpuaas_0002
Revises: gpuaas_0001
Create Date: 2026-12-02
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "gpuaas_0002"
down_revision: str | Sequence[str] | None = "gpuaas_0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "gpuaas_node_capacity",
        sa.Column("node_id", sa.String(length=40), nullable=False),
        sa.Column("gpu_model", sa.String(length=32), nullable=False),
        sa.Column("installed", sa.Integer(), nullable=False),
        sa.Column("free", sa.Integer(), nullable=False),
        sa.CheckConstraint("installed > 0 AND free >= 0 AND free <= installed",
                           name=op.f("ck_gpuaas_node_capacity_counts_in_range")),
        sa.ForeignKeyConstraint(["node_id"], ["gpuaas_nodes.id"],
                                name=op.f("fk_gpuaas_node_capacity_node_id_gpuaas_nodes"),
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("node_id", "gpu_model", name=op.f("pk_gpuaas_node_capacity")),
    )
    op.create_index("ix_gpuaas_node_capacity_free", "gpuaas_node_capacity",
                    ["gpu_model", "free", "node_id"], unique=False)
    op.create_index("ix_gpuaas_node_capacity_installed", "gpuaas_node_capacity",
                    ["gpu_model", "installed"], unique=False)
    op.create_index("ix_gpuaas_instances_queue", "gpuaas_instances",
                    ["state", "gpu_model", sa.text("priority DESC"), "queue_order", "id"],
                    unique=False)
    # What capacity.py's refresh computes, for every node at once.
    op.execute("""
        INSERT INTO gpuaas_node_capacity (node_id, gpu_model, installed, free)
        SELECT g.node_id, g.model, count(*),
               sum(CASE WHEN n.state = 'ready' AND g.healthy AND a.gpu_id IS NULL
                        THEN 1 ELSE 0 END)
        FROM gpuaas_gpus g
        JOIN gpuaas_nodes n ON n.id = g.node_id
        LEFT JOIN gpuaas_gpu_assignments a ON a.gpu_id = g.id
        GROUP BY g.node_id, g.model
    """)


def downgrade() -> None:
    op.drop_index("ix_gpuaas_instances_queue", table_name="gpuaas_instances")
    op.drop_index("ix_gpuaas_node_capacity_installed", table_name="gpuaas_node_capacity")
    op.drop_index("ix_gpuaas_node_capacity_free", table_name="gpuaas_node_capacity")
    op.drop_table("gpuaas_node_capacity")
