"""IAM: platform service accounts (a product's own account), i.e. service_accounts.org_id
may be NULL (owned by neither an organization nor a project).

Revision ID: iam_0003
Revises: iam_0002
Create Date: 2026-11-30
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "iam_0003"
down_revision: str | Sequence[str] | None = "iam_0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("service_accounts") as batch:
        batch.alter_column("org_id", existing_type=sa.String(length=40), nullable=True)


def downgrade() -> None:
    n = op.get_bind().execute(sa.text(
        "SELECT count(*) FROM service_accounts WHERE org_id IS NULL")).scalar_one()
    if n:
        raise RuntimeError(f"{n} platform service account(s) exist; the previous schema "
                           "cannot hold them. Delete them (DELETE /service-accounts/{id}) "
                           "before downgrading.")
    with op.batch_alter_table("service_accounts") as batch:
        batch.alter_column("org_id", existing_type=sa.String(length=40), nullable=False)
