"""Idle policies: "GPU utilization below X % for N minutes: stop; stopped D days: delete",
set by the administrators of an organization, department or project, per instance type.

Every policy on an instance's path applies (a project adds stricter rules, never looser
ones). Instances whose launcher holds ``policy.idle.exempt`` on them are left alone.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Response

from aicloud.api.authz import Authorize, Caller, path_param
from aicloud.api.deps import RequestRoute
from aicloud.platform import policy
from aicloud.shared.errors import NotFound, ValidationFailed

router = APIRouter(tags=["policy: idle"], route_class=RequestRoute)

SCOPE = path_param("scope_id")
InstanceType = Annotated[str, Path(description="An instance type, or * for every type",
                                   max_length=64)]


def _path(caller: Caller, scope_id: str) -> str:
    if caller.snapshot().kind.get(scope_id) not in ("org", "department", "project"):
        raise ValidationFailed("idle policies are set on an organization, department or "
                               "project")
    return caller.snapshot().scope_path(scope_id)


@router.get("/scopes/{scope_id}/idle-policies", response_model=list[policy.IdlePolicy])
def list_idle_policies(
    scope_id: str,
    caller: Annotated[Caller, Authorize("policy.idle_policies.read", scope=SCOPE)],
) -> list[policy.IdlePolicy]:
    """The idle policies that apply at the scope: its own and those of every scope above."""
    return policy.list_idle_policies(caller.session, _path(caller, scope_id))


@router.put("/scopes/{scope_id}/idle-policies/{instance_type}",
            response_model=policy.IdlePolicy)
def set_idle_policy(
    scope_id: str, instance_type: InstanceType, body: policy.IdlePolicySpec,
    caller: Annotated[Caller, Authorize("policy.idle_policies.write", scope=SCOPE)],
) -> policy.IdlePolicy:
    """Create or change the scope's policy for an instance type (``*``: every type)."""
    return policy.set_idle_policy(caller.session, actor=caller.actor,
                                  scope_path=_path(caller, scope_id),
                                  instance_type=instance_type, spec=body)


@router.delete("/scopes/{scope_id}/idle-policies/{instance_type}", status_code=204)
def delete_idle_policy(
    scope_id: str, instance_type: InstanceType,
    caller: Annotated[Caller, Authorize("policy.idle_policies.write", scope=SCOPE)],
) -> Response:
    """Remove the scope's policy for an instance type (``*``: the one for every type)."""
    if not policy.delete_idle_policy(caller.session, actor=caller.actor,
                                     scope_path=_path(caller, scope_id),
                                     instance_type=instance_type):
        raise NotFound(f"no idle policy for {instance_type} at this scope")
    return Response(status_code=204)
