"""IAM: hierarchy (organizations, departments, projects), groups, service accounts, API keys,
custom roles, role and deny bindings, invitations, login throttling, policy version.

Revision ID: iam_0002
Revises: iam_0001
Create Date: 2026-11-23
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from aicloud.shared.db.base import UTCDateTime

revision: str = "iam_0002"
down_revision: str | Sequence[str] | None = "iam_0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "api_keys",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("principal_id", sa.String(length=40), nullable=False),
        sa.Column("principal_kind", sa.String(length=20), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("key_hash", sa.String(length=64), nullable=False),
        sa.Column("scope_id", sa.String(length=40), nullable=True),
        sa.Column("permissions", sa.JSON(), nullable=True),
        sa.Column("expires_at", UTCDateTime(timezone=True), nullable=True),
        sa.Column("last_used_at", UTCDateTime(timezone=True), nullable=True),
        sa.Column("revoked_at", UTCDateTime(timezone=True), nullable=True),
        sa.Column("created_at", UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=("pk_api_keys")),
        sa.UniqueConstraint("key_hash", name=("uq_api_keys_key_hash")),
    )
    op.create_index(("ix_api_keys_principal_id"), "api_keys", ["principal_id"], unique=False)
    op.create_table(
        "deny_bindings",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("principal_id", sa.String(length=40), nullable=False),
        sa.Column("permission", sa.String(length=200), nullable=False),
        sa.Column("scope_id", sa.String(length=64), nullable=False),
        sa.Column("resource_type", sa.String(length=64), nullable=True),
        sa.Column("parent_scope_id", sa.String(length=40), nullable=True),
        sa.Column("org_id", sa.String(length=40), nullable=True),
        sa.Column("created_at", UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=("pk_deny_bindings")),
    )
    op.create_index(("ix_deny_bindings_org_id"), "deny_bindings", ["org_id"], unique=False)
    op.create_index(
        ("ix_deny_bindings_principal_id"), "deny_bindings", ["principal_id"], unique=False
    )
    op.create_index(("ix_deny_bindings_scope_id"), "deny_bindings", ["scope_id"], unique=False)
    op.create_table(
        "iam_login_throttle",
        sa.Column("key", sa.String(length=320), nullable=False),
        sa.Column("failures", sa.Integer(), nullable=False),
        sa.Column("window_started_at", UTCDateTime(timezone=True), nullable=False),
        sa.Column("locked_until", UTCDateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("key", name=("pk_iam_login_throttle")),
    )
    op.create_table(
        "iam_policy_version",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("version", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=("pk_iam_policy_version")),
    )
    op.create_table(
        "organizations",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("created_at", UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=("pk_organizations")),
    )
    op.create_table(
        "role_bindings",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("principal_id", sa.String(length=40), nullable=False),
        sa.Column("role_id", sa.String(length=40), nullable=False),
        sa.Column("scope_id", sa.String(length=64), nullable=False),
        sa.Column("resource_type", sa.String(length=64), nullable=True),
        sa.Column("parent_scope_id", sa.String(length=40), nullable=True),
        sa.Column("org_id", sa.String(length=40), nullable=True),
        sa.Column("created_at", UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=("pk_role_bindings")),
    )
    op.create_index(("ix_role_bindings_org_id"), "role_bindings", ["org_id"], unique=False)
    op.create_index(
        ("ix_role_bindings_principal_id"), "role_bindings", ["principal_id"], unique=False
    )
    op.create_index(("ix_role_bindings_role_id"), "role_bindings", ["role_id"], unique=False)
    op.create_index(("ix_role_bindings_scope_id"), "role_bindings", ["scope_id"], unique=False)
    op.create_table(
        "departments",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("org_id", sa.String(length=40), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("created_at", UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["org_id"], ["organizations.id"], name=("fk_departments_org_id_organizations")
        ),
        sa.PrimaryKeyConstraint("id", name=("pk_departments")),
    )
    op.create_index(("ix_departments_org_id"), "departments", ["org_id"], unique=False)
    op.create_table(
        "iam_groups",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("org_id", sa.String(length=40), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("created_at", UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["org_id"], ["organizations.id"], name=("fk_iam_groups_org_id_organizations")
        ),
        sa.PrimaryKeyConstraint("id", name=("pk_iam_groups")),
        sa.UniqueConstraint("org_id", "name", name=("uq_iam_groups_org_id_name")),
    )
    op.create_index(("ix_iam_groups_org_id"), "iam_groups", ["org_id"], unique=False)
    op.create_table(
        "iam_invitations",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("org_id", sa.String(length=40), nullable=False),
        sa.Column("scope_id", sa.String(length=40), nullable=False),
        sa.Column("email", sa.String(length=320), nullable=False),
        sa.Column("role_id", sa.String(length=40), nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("expires_at", UTCDateTime(timezone=True), nullable=False),
        sa.Column("accepted_at", UTCDateTime(timezone=True), nullable=True),
        sa.Column("accepted_by", sa.String(length=40), nullable=True),
        sa.Column("revoked_at", UTCDateTime(timezone=True), nullable=True),
        sa.Column("created_at", UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["org_id"], ["organizations.id"], name=("fk_iam_invitations_org_id_organizations")
        ),
        sa.PrimaryKeyConstraint("id", name=("pk_iam_invitations")),
        sa.UniqueConstraint("token_hash", name=("uq_iam_invitations_token_hash")),
    )
    op.create_index(("ix_iam_invitations_org_id"), "iam_invitations", ["org_id"], unique=False)
    op.create_table(
        "iam_roles",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("org_id", sa.String(length=40), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("description", sa.String(length=500), nullable=False),
        sa.Column("permissions", sa.JSON(), nullable=False),
        sa.Column("created_at", UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["org_id"], ["organizations.id"], name=("fk_iam_roles_org_id_organizations")
        ),
        sa.PrimaryKeyConstraint("id", name=("pk_iam_roles")),
        sa.UniqueConstraint("org_id", "name", name=("uq_iam_roles_org_id_name")),
    )
    op.create_index(("ix_iam_roles_org_id"), "iam_roles", ["org_id"], unique=False)
    op.create_table(
        "iam_group_members",
        sa.Column("group_id", sa.String(length=40), nullable=False),
        sa.Column("user_id", sa.String(length=40), nullable=False),
        sa.ForeignKeyConstraint(
            ["group_id"],
            ["iam_groups.id"],
            name=("fk_iam_group_members_group_id_iam_groups"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["users.id"],
            name=("fk_iam_group_members_user_id_users"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("group_id", "user_id", name=("pk_iam_group_members")),
    )
    op.create_index(
        ("ix_iam_group_members_user_id"), "iam_group_members", ["user_id"], unique=False
    )
    op.create_table(
        "projects",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("org_id", sa.String(length=40), nullable=False),
        sa.Column("department_id", sa.String(length=40), nullable=True),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("created_at", UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["department_id"], ["departments.id"], name=("fk_projects_department_id_departments")
        ),
        sa.ForeignKeyConstraint(
            ["org_id"], ["organizations.id"], name=("fk_projects_org_id_organizations")
        ),
        sa.PrimaryKeyConstraint("id", name=("pk_projects")),
    )
    op.create_index(("ix_projects_department_id"), "projects", ["department_id"], unique=False)
    op.create_index(("ix_projects_org_id"), "projects", ["org_id"], unique=False)
    op.create_table(
        "service_accounts",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("org_id", sa.String(length=40), nullable=False),
        sa.Column("project_id", sa.String(length=40), nullable=True),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("disabled", sa.Boolean(), nullable=False),
        sa.Column("created_at", UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["org_id"], ["organizations.id"], name=("fk_service_accounts_org_id_organizations")
        ),
        sa.ForeignKeyConstraint(
            ["project_id"], ["projects.id"], name=("fk_service_accounts_project_id_projects")
        ),
        sa.PrimaryKeyConstraint("id", name=("pk_service_accounts")),
    )
    op.create_index(("ix_service_accounts_org_id"), "service_accounts", ["org_id"], unique=False)
    op.create_index(
        ("ix_service_accounts_project_id"), "service_accounts", ["project_id"], unique=False
    )

    policy_version = sa.table(
        "iam_policy_version", sa.column("id", sa.Integer), sa.column("version", sa.BigInteger)
    )
    op.bulk_insert(policy_version, [{"id": 1, "version": 0}])


def downgrade() -> None:
    op.drop_index(("ix_service_accounts_project_id"), table_name="service_accounts")
    op.drop_index(("ix_service_accounts_org_id"), table_name="service_accounts")
    op.drop_table("service_accounts")
    op.drop_index(("ix_projects_org_id"), table_name="projects")
    op.drop_index(("ix_projects_department_id"), table_name="projects")
    op.drop_table("projects")
    op.drop_index(("ix_iam_group_members_user_id"), table_name="iam_group_members")
    op.drop_table("iam_group_members")
    op.drop_index(("ix_iam_roles_org_id"), table_name="iam_roles")
    op.drop_table("iam_roles")
    op.drop_index(("ix_iam_invitations_org_id"), table_name="iam_invitations")
    op.drop_table("iam_invitations")
    op.drop_index(("ix_iam_groups_org_id"), table_name="iam_groups")
    op.drop_table("iam_groups")
    op.drop_index(("ix_departments_org_id"), table_name="departments")
    op.drop_table("departments")
    op.drop_index(("ix_role_bindings_scope_id"), table_name="role_bindings")
    op.drop_index(("ix_role_bindings_role_id"), table_name="role_bindings")
    op.drop_index(("ix_role_bindings_principal_id"), table_name="role_bindings")
    op.drop_index(("ix_role_bindings_org_id"), table_name="role_bindings")
    op.drop_table("role_bindings")
    op.drop_table("organizations")
    op.drop_table("iam_policy_version")
    op.drop_table("iam_login_throttle")
    op.drop_index(("ix_deny_bindings_scope_id"), table_name="deny_bindings")
    op.drop_index(("ix_deny_bindings_principal_id"), table_name="deny_bindings")
    op.drop_index(("ix_deny_bindings_org_id"), table_name="deny_bindings")
    op.drop_table("deny_bindings")
    op.drop_index(("ix_api_keys_principal_id"), table_name="api_keys")
    op.drop_table("api_keys")
