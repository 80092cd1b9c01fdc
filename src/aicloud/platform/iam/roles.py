"""Roles: named sets of permission patterns. Built-ins live here; custom roles are rows."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from sqlalchemy import select
from sqlalchemy.orm import Session

from aicloud.platform import audit
from aicloud.platform.iam.deletion_guards import lock_org_tree
from aicloud.platform.iam.models import OrganizationModel, RoleBindingModel, RoleModel
from aicloud.platform.iam.permissions import CATALOG
from aicloud.platform.iam.policy_version import bump_policy_version
from aicloud.platform.iam.schemas import Role, RoleCreate
from aicloud.shared.clock import utcnow
from aicloud.shared.errors import Conflict, NotFound, ValidationFailed
from aicloud.shared.ids import new_id

if TYPE_CHECKING:
    from aicloud.platform.iam.authorize import Principal


@dataclass(frozen=True)
class BuiltinRole:
    id: str
    description: str
    permissions: tuple[str, ...]


# Patterns, expanded against the catalog when a policy snapshot is compiled, so a product
# declared later (gpuaas.*) is covered by the roles that name it.
BUILTIN_ROLES: dict[str, BuiltinRole] = {r.id: r for r in (
    BuiltinRole("platform-admin", "everything, everywhere", ("*",)),
    BuiltinRole("platform-operator", "runs the platform: nodes, prices, checkpoints; reads all",
                ("*.*.read", "gpuaas.nodes.*", "billing.prices.*", "audit.checkpoints.*",
                 "policy.quotas.*")),
    BuiltinRole("org-owner", "everything inside the organization",
                ("iam.*", "billing.*", "audit.events.read", "gpuaas.instances.*",
                 "policy.quotas.*", "policy.idle_policies.*", "policy.idle.exempt", "access.*")),
    BuiltinRole("org-admin", "manages the organization's structure, members and access",
                ("iam.*", "audit.events.read", "gpuaas.instances.*", "billing.*.read",
                 "policy.quotas.*", "policy.idle_policies.*", "policy.idle.exempt", "access.*")),
    BuiltinRole("billing-admin", "budgets, top-ups and billing reports",
                ("billing.*", "iam.orgs.read", "iam.departments.read", "iam.projects.read")),
    BuiltinRole("department-admin", "manages the department's projects and their access",
                ("iam.departments.read", "iam.projects.*", "iam.bindings.*",
                 "iam.service_accounts.*", "iam.api_keys.*", "iam.invitations.*",
                 "iam.groups.read", "iam.roles.read", "gpuaas.instances.*", "billing.*.read",
                 "policy.quotas.*", "policy.idle_policies.*", "access.*")),
    BuiltinRole("project-admin", "manages the project, its members and resources",
                ("iam.projects.read", "iam.projects.update", "iam.bindings.*",
                 "iam.service_accounts.*", "iam.api_keys.*", "iam.invitations.*",
                 "iam.roles.read", "gpuaas.instances.*", "billing.*.read",
                 "policy.quotas.read", "policy.idle_policies.*", "access.*")),
    BuiltinRole("project-member", "uses the project's resources",
                ("iam.projects.read", "gpuaas.instances.*", "billing.usage.read",
                 "policy.quotas.read", "policy.idle_policies.read", "access.*")),
    BuiltinRole("project-viewer", "reads the project and its resources",
                ("iam.projects.read", "gpuaas.instances.read", "access.endpoints.read")),
    BuiltinRole("auditor", "reads everything including the audit log, changes nothing",
                ("*.*.read",)),
    # For a product's service account bound at the platform: it charges tenants (usage it
    # reports is rated against their wallets; a hold it posts moves money to revenue), so the
    # name says "biller", not "reporter". Nothing else: no top-ups, prices or IAM.
    BuiltinRole("product-biller", "a product's service account: reports usage, reserves, "
                "posts and voids holds on organization wallets, reads prices (bind at the "
                "platform)",
                ("billing.usage.write", "billing.holds.read", "billing.holds.write",
                 "billing.prices.read")),
)}


def role_model_to_role(model: RoleModel) -> Role:
    return Role(id=model.id, name=model.name, org_id=model.org_id,
                description=model.description, permissions=list(model.permissions),
                builtin=False, created_at=model.created_at)


def builtin_to_role(r: BuiltinRole) -> Role:
    return Role(id=r.id, name=r.id, org_id=None, description=r.description,
                permissions=list(r.permissions), builtin=True, created_at=None)


def role_patterns(session: Session, role_id: str) -> tuple[str, ...]:
    builtin = BUILTIN_ROLES.get(role_id)
    if builtin is not None:
        return builtin.permissions
    model = session.get(RoleModel, role_id)
    if model is None:
        raise NotFound(f"role {role_id} not found")
    return tuple(model.permissions)


def expand_patterns(patterns: tuple[str, ...] | list[str]) -> frozenset[str]:
    out: set[str] = set()
    for p in patterns:
        out |= CATALOG.expand(p)
    return frozenset(out)


def role_permissions(session: Session, role_id: str) -> frozenset[str]:
    """The concrete permissions a role grants today. A custom role never grants a
    platform-only permission, even one declared after the role was made."""
    perms = expand_patterns(role_patterns(session, role_id))
    return perms if role_id in BUILTIN_ROLES else perms & CATALOG.grantable()


def get_role(session: Session, role_id: str) -> Role:
    builtin = BUILTIN_ROLES.get(role_id)
    if builtin is not None:
        return builtin_to_role(builtin)
    model = session.get(RoleModel, role_id)
    if model is None:
        raise NotFound(f"role {role_id} not found")
    return role_model_to_role(model)


def role_org(session: Session, role_id: str) -> str | None:
    """The organization a custom role belongs to (None for built-ins)."""
    if role_id in BUILTIN_ROLES:
        return None
    model = session.get(RoleModel, role_id)
    if model is None:
        raise NotFound(f"role {role_id} not found")
    return model.org_id


def create_role(session: Session, org_id: str, body: RoleCreate, *,
                actor: audit.Actor, grantor: Principal | None) -> Role:
    """A custom role of the organization: only permissions of the grantable set (no
    platform-only ones), and only ones ``grantor`` holds on the organization."""
    # Imported here: grants (through authorize) imports this module's built-in roles.
    from aicloud.platform.iam.grants import require_holds

    if body.name in BUILTIN_ROLES:
        raise Conflict(f"{body.name} is a built-in role name", field="name")
    lock_org_tree(session, org_id)  # ordered with a concurrent delete_org
    if session.get(OrganizationModel, org_id) is None:
        raise NotFound(f"organization {org_id} not found")
    if not body.permissions:
        raise ValidationFailed("a role needs at least one permission", field="permissions")
    for pattern in body.permissions:
        CATALOG.validate_pattern(pattern)
        platform_only = sorted(p for p in CATALOG.expand(pattern)
                               if CATALOG.is_platform_only(p))
        if platform_only:
            raise ValidationFailed(
                f"{pattern!r} matches platform-only permissions ({', '.join(platform_only)}), "
                "which no organization's role may contain", field="permissions")
    require_holds(session, grantor, expand_patterns(body.permissions), org_id,
                  "this role")
    if session.scalar(select(RoleModel.id).where(RoleModel.org_id == org_id,
                                                 RoleModel.name == body.name)):
        raise Conflict(f"a role named {body.name} already exists", field="name")
    model = RoleModel(id=new_id("role"), org_id=org_id, name=body.name,
                      description=body.description, permissions=sorted(set(body.permissions)),
                      created_at=utcnow())
    session.add(model)
    session.flush()
    audit.record(session, actor=actor, action="iam.role.create", target_type="role",
                 target_id=model.id, scope_path=f"/{org_id}",
                 changes=audit.diff(None, {"name": model.name,
                                           "permissions": model.permissions}))
    return role_model_to_role(model)


def delete_role(session: Session, role_id: str, *, actor: audit.Actor) -> None:
    model = session.get(RoleModel, role_id)
    if model is None:
        raise NotFound(f"role {role_id} not found")
    if session.scalar(select(RoleBindingModel.id).where(RoleBindingModel.role_id == role_id)):
        raise Conflict("the role is still bound; delete its bindings first")
    session.delete(model)
    bump_policy_version(session)
    audit.record(session, actor=actor, action="iam.role.delete", target_type="role",
                 target_id=role_id, scope_path=f"/{model.org_id}",
                 changes=audit.diff({"name": model.name}, None))


def list_roles(session: Session, org_ids: list[str] | None) -> list[Role]:
    """Built-ins plus the custom roles of the given organizations (None: all)."""
    out = [builtin_to_role(r) for r in BUILTIN_ROLES.values()]
    stmt = select(RoleModel).order_by(RoleModel.id)
    if org_ids is not None:
        stmt = stmt.where(RoleModel.org_id.in_(org_ids))
    out.extend(role_model_to_role(m) for m in session.scalars(stmt))
    return out
