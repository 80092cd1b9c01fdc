"""The escalation rule: nobody hands out what they do not hold.

A principal may create a custom role, bind a role, invite with a role, deny a permission, put
someone in a group or mint an API key for a service account only if it holds, where that
takes effect, every permission it would hand out. "Holds" is what ``authorize()`` answers for
the caller itself, so an API key's narrowing and the caller's deny bindings count (the rule of
GCP and AWS IAM, and Kubernetes RBAC's escalation check).

``grantor=None`` is the system (bootstrap, accepting an invitation already checked when it
was made); every request passes its caller's principal.
"""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import select
from sqlalchemy.orm import Session

from aicloud.platform.iam.authorize import PLATFORM, Principal, ResourceRef, Target
from aicloud.platform.iam.authorize import policy_snapshot as _snapshot
from aicloud.platform.iam.models import RoleBindingModel
from aicloud.platform.iam.roles import role_permissions
from aicloud.shared.errors import Forbidden, ValidationFailed

# Built-in roles that govern the platform itself: bindable only at the platform scope (where
# only platform administrators hold everything they contain).
PLATFORM_ROLES = frozenset({"platform-admin", "platform-operator", "product-biller"})


def missing_permissions(session: Session, grantor: Principal, permissions: Iterable[str],
                        target: Target) -> list[str]:
    snap = _snapshot(session)
    return sorted(p for p in set(permissions) if not snap.can(grantor, p, target))


def require_holds(session: Session, grantor: Principal | None, permissions: Iterable[str],
                  target: Target, what: str) -> None:
    """403 unless ``grantor`` holds every one of ``permissions`` on ``target``."""
    if grantor is None:
        return
    missing = missing_permissions(session, grantor, permissions, target)
    if missing:
        shown = ", ".join(missing[:8]) + (f" and {len(missing) - 8} more"
                                          if len(missing) > 8 else "")
        raise Forbidden(f"{what} would grant permissions you do not hold there: {shown}")


def require_role_bindable(role_id: str, target: Target) -> None:
    if role_id in PLATFORM_ROLES and target != PLATFORM:
        raise ValidationFailed(f"{role_id} is a platform role: it is bound only at the "
                               "platform scope", field="role_id")


def require_can_grant_role(session: Session, grantor: Principal | None, role_id: str,
                           target: Target, what: str = "this binding") -> None:
    require_role_bindable(role_id, target)
    require_holds(session, grantor, role_permissions(session, role_id), target, what)


def decision_target(scope_id: str, resource_type: str | None,
                    parent_scope_id: str | None) -> Target:
    """What a (role or deny) binding applies to, as authorize() takes it: a resource of a
    project (stored as resource id + parent project) or a scope."""
    if parent_scope_id:
        return ResourceRef(resource_type or "resource", scope_id, parent_scope_id)
    return scope_id


def binding_target(m: RoleBindingModel) -> Target:
    return decision_target(m.scope_id, m.resource_type, m.parent_scope_id)


def require_holds_bindings_of(session: Session, grantor: Principal | None, principal_id: str,
                              what: str) -> None:
    """Whoever can act as (or through) ``principal_id`` gets everything bound to it: minting
    a service account's key or joining a group is granting each of its bindings."""
    if grantor is None:
        return
    for m in session.scalars(select(RoleBindingModel).where(
            RoleBindingModel.principal_id == principal_id)):
        require_holds(session, grantor, role_permissions(session, m.role_id),
                      binding_target(m), what)
