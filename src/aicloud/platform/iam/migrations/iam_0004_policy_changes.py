"""IAM: the policy change log (iam_policy_changes), so a process's snapshot applies a binding
change alone instead of reloading the whole policy.

Revision ID: iam_0004
Revises: iam_0003
Create Date: 2026-12-02
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "iam_0004"
down_revision: str | Sequence[str] | None = "iam_0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "iam_policy_changes",
        sa.Column("seq", sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
                  autoincrement=True, nullable=False),
        sa.Column("version", sa.BigInteger(), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("principal_id", sa.String(length=40), nullable=True),
        sa.Column("scope_id", sa.String(length=64), nullable=True),
        sa.PrimaryKeyConstraint("seq", name=op.f("pk_iam_policy_changes")),
    )


def downgrade() -> None:
    op.drop_table("iam_policy_changes")
