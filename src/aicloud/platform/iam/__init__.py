"""IAM: the hierarchy (organizations → departments → projects → resources), principals
(users, service accounts, groups), sessions and API keys, roles, role and deny bindings,
invitations, and ``authorize()``.

This module is the public surface other layers may call. Products declare their permissions
into ``CATALOG`` and authorize on their own resources with ``ResourceRef``.
"""

from aicloud.platform.iam.apikeys import (
    api_key_owner_scope,
    create_api_key,
    get_api_key_model,
    list_api_keys,
    revoke_api_key,
)
from aicloud.platform.iam.authorize import (
    PLATFORM,
    Decision,
    Principal,
    ResourceRef,
    Snapshot,
    Target,
    authorize,
    build_snapshot,
    policy_snapshot,
)
from aicloud.platform.iam.bindings import (
    binding_scope,
    create_binding,
    create_deny_binding,
    delete_binding,
    delete_deny_binding,
    get_binding_model,
    get_deny_binding_model,
    list_bindings,
    list_deny_bindings,
)
from aicloud.platform.iam.hierarchy import (
    create_department,
    create_org,
    create_project,
    delete_department,
    delete_org,
    delete_project,
    get_department_model,
    get_org_model,
    get_project_model,
    list_departments,
    list_orgs,
    list_projects,
    move_project,
    rename_department,
    rename_org,
    rename_project,
    scope_path,
)
from aicloud.platform.iam.invitations import (
    accept_invitation,
    create_invitation,
    get_invitation_model,
    list_invitations,
    revoke_invitation,
)
from aicloud.platform.iam.permissions import CATALOG, Permission, PermissionCatalog
from aicloud.platform.iam.principals import (
    add_group_member,
    create_group,
    create_service_account,
    delete_group,
    delete_service_account,
    get_group_model,
    get_service_account_model,
    get_user_model,
    group_members,
    list_groups,
    list_service_accounts,
    list_users,
    principal_kind,
    remove_group_member,
    service_account_scope,
    update_user,
    user_model_to_user,
    users_of_orgs,
)
from aicloud.platform.iam.roles import (
    BUILTIN_ROLES,
    create_role,
    delete_role,
    get_role,
    list_roles,
    role_org,
)
from aicloud.platform.iam.schemas import *  # noqa: F403 (the API models are public)
from aicloud.platform.iam.schemas import BootstrapResult, LoginRequest, LoginResponse, User
from aicloud.platform.iam.service import (
    attempt_login,
    bootstrap_admin,
    count_users,
    create_user,
    get_user,
    login,
    logout,
    resolve_token,
)

__all__ = [
    "BUILTIN_ROLES", "CATALOG", "PLATFORM", "BootstrapResult", "Decision", "LoginRequest",
    "LoginResponse", "Permission", "PermissionCatalog", "Principal", "ResourceRef", "Snapshot",
    "Target", "User", "accept_invitation", "add_group_member", "api_key_owner_scope",
    "attempt_login", "authorize", "binding_scope", "bootstrap_admin", "build_snapshot",
    "count_users",
    "create_api_key", "create_binding", "create_deny_binding", "create_department",
    "create_group", "create_invitation", "create_org", "create_project", "create_role",
    "create_service_account", "create_user", "delete_binding", "delete_deny_binding",
    "delete_department", "delete_group", "delete_org", "delete_project", "delete_role",
    "delete_service_account", "get_api_key_model", "get_binding_model",
    "get_deny_binding_model", "get_department_model", "get_group_model",
    "get_invitation_model", "get_org_model", "get_project_model", "get_role",
    "get_service_account_model", "get_user", "get_user_model", "group_members",
    "list_api_keys", "list_bindings", "list_deny_bindings", "list_departments", "list_groups",
    "list_invitations", "list_orgs", "list_projects", "list_roles", "list_service_accounts",
    "list_users", "login", "logout", "move_project", "policy_snapshot", "principal_kind",
    "remove_group_member", "rename_department", "rename_org", "rename_project",
    "resolve_token", "revoke_api_key", "revoke_invitation", "role_org", "scope_path",
    "service_account_scope", "update_user", "user_model_to_user", "users_of_orgs",
]
