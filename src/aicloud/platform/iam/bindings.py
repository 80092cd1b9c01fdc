"""Role bindings (allow) and deny bindings: who may do what, where."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from aicloud.platform import audit
from aicloud.platform.iam.authorize import PLATFORM, Principal
from aicloud.platform.iam.grants import decision_target, require_can_grant_role, require_holds
from aicloud.platform.iam.hierarchy import scope_path
from aicloud.platform.iam.models import (
    DenyBindingModel,
    GroupModel,
    RoleBindingModel,
    ServiceAccountModel,
)
from aicloud.platform.iam.permissions import CATALOG
from aicloud.platform.iam.policy_version import bump_policy_version
from aicloud.platform.iam.principals import (
    platform_admins,
    principal_kind,
    require_another_platform_admin,
    require_user_known_to,
)
from aicloud.platform.iam.resources import require_resource_in_project
from aicloud.platform.iam.roles import role_org
from aicloud.platform.iam.schemas import (
    DenyBinding,
    DenyBindingCreate,
    ResourceScope,
    RoleBinding,
    RoleBindingCreate,
)
from aicloud.shared.clock import utcnow
from aicloud.shared.errors import Conflict, NotFound, ValidationFailed
from aicloud.shared.ids import id_prefix, new_id


def binding_model_to_binding(m: RoleBindingModel) -> RoleBinding:
    return RoleBinding(id=m.id, principal_id=m.principal_id, role_id=m.role_id,
                       scope_id=m.scope_id, resource_type=m.resource_type,
                       created_at=m.created_at)


def deny_model_to_deny(m: DenyBindingModel) -> DenyBinding:
    return DenyBinding(id=m.id, principal_id=m.principal_id, permission=m.permission,
                       scope_id=m.scope_id, resource_type=m.resource_type,
                       created_at=m.created_at)


def _scope_org(path: str) -> str | None:
    return path.split("/")[1] or None


def _check_principal(session: Session, principal_id: str, org_id: str | None,
                     grantor: Principal | None) -> str:
    """The principal exists and may be bound in this organization: service accounts and
    groups only inside their own; users already in it (bound there or in one of its groups),
    except for platform administrators (who read every user) and the system. Others join
    through invitations, so a user id from another tenant reveals nothing (404)."""
    kind = principal_kind(principal_id)
    if kind == "user":
        require_user_known_to(session, grantor, principal_id, org_id)
        return kind
    model = ServiceAccountModel if kind == "service_account" else GroupModel
    row = session.get(model, principal_id)
    if row is None or row.org_id != org_id:
        raise NotFound(f"principal {principal_id} not found")
    return kind


def _resolve_scope(session: Session, scope_id: str,
                   resource: ResourceScope | None) -> tuple[str, str | None, str | None, str]:
    """(scope id to store, resource type, parent scope, scope path). A resource must be one
    a product registered, exist, and lie in the project named by ``scope_id``."""
    path = scope_path(session, scope_id)
    if resource is None:
        return scope_id, None, None, path
    if id_prefix(scope_id) != "prj":
        raise ValidationFailed("a resource binding is made on the resource's project",
                               field="resource")
    require_resource_in_project(session, resource.type, resource.id, scope_id)
    return resource.id, resource.type, scope_id, f"{path}/{resource.id}"


def create_binding(session: Session, scope_id: str, body: RoleBindingCreate, *,
                   actor: audit.Actor, grantor: Principal | None) -> RoleBinding:
    """Bind a role. ``grantor`` (the caller; None for the system) must hold every permission
    of the role where it is bound; platform roles are bound only at the platform."""
    target, rtype, parent, path = _resolve_scope(session, scope_id, body.resource)
    org_id = _scope_org(path)
    _check_principal(session, body.principal_id, org_id, grantor)
    owner = role_org(session, body.role_id)
    if owner is not None and owner != org_id:
        raise NotFound(f"role {body.role_id} not found")
    require_can_grant_role(session, grantor, body.role_id,
                           decision_target(target, rtype, parent))
    if session.scalar(select(RoleBindingModel.id).where(
            RoleBindingModel.principal_id == body.principal_id,
            RoleBindingModel.role_id == body.role_id, RoleBindingModel.scope_id == target)):
        raise Conflict("this binding already exists")
    m = RoleBindingModel(id=new_id("rb"), principal_id=body.principal_id, role_id=body.role_id,
                         scope_id=target, resource_type=rtype, parent_scope_id=parent,
                         org_id=org_id, created_at=utcnow())
    session.add(m)
    session.flush()
    bump_policy_version(session, kind="binding", principal_id=m.principal_id,
                        scope_id=m.scope_id)
    audit.record(session, actor=actor, action="iam.binding.create", target_type="role_binding",
                 target_id=m.id, scope_path=path,
                 changes=audit.diff(None, {"principal_id": m.principal_id,
                                           "role_id": m.role_id, "scope_id": m.scope_id}))
    return binding_model_to_binding(m)


def get_binding_model(session: Session, binding_id: str) -> RoleBindingModel:
    m = session.get(RoleBindingModel, binding_id)
    if m is None:
        raise NotFound(f"binding {binding_id} not found")
    return m


def binding_scope(m: RoleBindingModel | DenyBindingModel) -> str:
    """The hierarchy scope that governs a binding (a resource binding's project)."""
    return m.parent_scope_id or m.scope_id


def delete_binding(session: Session, binding_id: str, *, actor: audit.Actor) -> None:
    """Delete a binding; never the last enabled platform administrator's (409)."""
    m = get_binding_model(session, binding_id)
    if m.role_id == "platform-admin" and m.scope_id == PLATFORM:
        require_another_platform_admin(session, m.principal_id)
    path = scope_path(session, binding_scope(m))
    session.delete(m)
    bump_policy_version(session, kind="binding", principal_id=m.principal_id,
                        scope_id=m.scope_id)
    audit.record(session, actor=actor, action="iam.binding.delete", target_type="role_binding",
                 target_id=binding_id, scope_path=path,
                 changes=audit.diff({"principal_id": m.principal_id, "role_id": m.role_id,
                                     "scope_id": m.scope_id}, None))


def list_bindings(session: Session, scope_id: str, *, after: str | None,
                  limit: int) -> list[RoleBinding]:
    """Bindings made at this scope or on resources of this project."""
    stmt = select(RoleBindingModel).where(
        (RoleBindingModel.scope_id == scope_id) | (RoleBindingModel.parent_scope_id == scope_id)
    ).order_by(RoleBindingModel.id).limit(limit)
    if after:
        stmt = stmt.where(RoleBindingModel.id > after)
    return [binding_model_to_binding(m) for m in session.scalars(stmt)]


def bind_platform_admin(session: Session, user_id: str, *, actor: audit.Actor) -> None:
    if session.scalar(select(RoleBindingModel.id).where(
            RoleBindingModel.principal_id == user_id,
            RoleBindingModel.role_id == "platform-admin",
            RoleBindingModel.scope_id == PLATFORM)):
        return
    create_binding(session, PLATFORM, RoleBindingCreate(principal_id=user_id,
                                                        role_id="platform-admin"), actor=actor,
                   grantor=None)


# --- deny bindings ---------------------------------------------------------------------------


def create_deny_binding(session: Session, scope_id: str, body: DenyBindingCreate, *,
                        actor: audit.Actor, grantor: Principal | None) -> DenyBinding:
    """Deny a pattern. ``grantor`` must hold every permission it matches there: one cannot
    take away (from a peer or a superior) what one could not give."""
    CATALOG.validate_pattern(body.permission)
    target, rtype, parent, path = _resolve_scope(session, scope_id, body.resource)
    org_id = _scope_org(path)
    kind = _check_principal(session, body.principal_id, org_id, grantor)
    require_holds(session, grantor, CATALOG.expand(body.permission),
                  decision_target(target, rtype, parent), "this deny binding")
    if target == PLATFORM and kind == "user" and body.principal_id in platform_admins(session):
        # A deny at the platform disarms an administrator as surely as unbinding it.
        require_another_platform_admin(session, body.principal_id)
    m = DenyBindingModel(id=new_id("deny"), principal_id=body.principal_id,
                         permission=body.permission, scope_id=target, resource_type=rtype,
                         parent_scope_id=parent, org_id=org_id, created_at=utcnow())
    session.add(m)
    session.flush()
    bump_policy_version(session, kind="deny", principal_id=m.principal_id,
                        scope_id=m.scope_id)
    audit.record(session, actor=actor, action="iam.deny_binding.create",
                 target_type="deny_binding", target_id=m.id, scope_path=path,
                 changes=audit.diff(None, {"principal_id": m.principal_id,
                                           "permission": m.permission, "scope_id": m.scope_id}))
    return deny_model_to_deny(m)


def get_deny_binding_model(session: Session, deny_id: str) -> DenyBindingModel:
    m = session.get(DenyBindingModel, deny_id)
    if m is None:
        raise NotFound(f"deny binding {deny_id} not found")
    return m


def delete_deny_binding(session: Session, deny_id: str, *, actor: audit.Actor,
                        grantor: Principal | None) -> None:
    """Lifting a deny gives its permissions back, so ``grantor`` must hold them there, as for
    creating it: an administrator denied something cannot lift its own deny."""
    m = get_deny_binding_model(session, deny_id)
    require_holds(session, grantor, CATALOG.expand(m.permission),
                  decision_target(m.scope_id, m.resource_type, m.parent_scope_id),
                  "lifting this deny binding")
    path = scope_path(session, binding_scope(m))
    session.delete(m)
    bump_policy_version(session, kind="deny", principal_id=m.principal_id,
                        scope_id=m.scope_id)
    audit.record(session, actor=actor, action="iam.deny_binding.delete",
                 target_type="deny_binding", target_id=deny_id, scope_path=path,
                 changes=audit.diff({"principal_id": m.principal_id,
                                     "permission": m.permission, "scope_id": m.scope_id}, None))


def list_deny_bindings(session: Session, scope_id: str, *, after: str | None,
                       limit: int) -> list[DenyBinding]:
    stmt = select(DenyBindingModel).where(
        (DenyBindingModel.scope_id == scope_id) | (DenyBindingModel.parent_scope_id == scope_id)
    ).order_by(DenyBindingModel.id).limit(limit)
    if after:
        stmt = stmt.where(DenyBindingModel.id > after)
    return [deny_model_to_deny(m) for m in session.scalars(stmt)]
