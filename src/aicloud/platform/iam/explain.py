"""explain(): the decision for another principal, as an administrator sees it.

The principal and the resource named in the question are checked like any id in a request:
a principal outside the scope's organization (unless the viewer reads every user) or a
resource outside the project is unknown (404), so explain answers nothing about another
tenant's principals or resources.
"""

from __future__ import annotations

from sqlalchemy.orm import Session

from aicloud.platform.iam.authorize import (
    PLATFORM,
    Decision,
    Principal,
    ResourceRef,
    Target,
    policy_snapshot,
)
from aicloud.platform.iam.permissions import CATALOG
from aicloud.platform.iam.principals import (
    get_service_account_model,
    principal_kind,
    require_user_known_to,
)
from aicloud.platform.iam.resources import require_resource_in_project
from aicloud.shared.errors import NotFound, ValidationFailed


def explain(session: Session, viewer: Principal, *, principal_id: str, permission: str,
            scope_id: str, resource_type: str | None = None,
            resource_id: str | None = None) -> Decision:
    CATALOG.require(permission)
    snap = policy_snapshot(session)
    if not snap.exists(scope_id):
        raise NotFound(f"scope {scope_id} not found")
    kind = principal_kind(principal_id)
    if kind == "group":
        raise NotFound(f"principal {principal_id} not found")
    org = snap.org_of(scope_id)
    if kind == "user":
        require_user_known_to(session, viewer, principal_id, org)
    elif (get_service_account_model(session, principal_id).org_id != org
          and not snap.can(viewer, "iam.service_accounts.read", PLATFORM)):
        raise NotFound(f"principal {principal_id} not found")
    target: Target = scope_id
    if resource_id:
        if not resource_type:
            raise ValidationFailed("resource_type is required with resource_id",
                                   field="resource_type")
        require_resource_in_project(session, resource_type, resource_id, scope_id)
        target = ResourceRef(resource_type, resource_id, scope_id)
    return snap.authorize(Principal(id=principal_id, kind=kind), permission, target)
