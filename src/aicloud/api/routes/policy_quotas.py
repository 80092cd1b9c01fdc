"""Quotas: limits per scope and resource key (e.g. ``gpu:H100``), enforced at admission.

A quota on a scope is set by whoever administers the scope *above* it: an organization owner
sub-allocates to departments and projects but cannot raise the organization's own limit,
which platform staff set. Reading needs ``policy.quotas.read`` on the scope itself.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Response
from pydantic import BaseModel, Field

from aicloud.api.authz import Authorize, Caller, path_param
from aicloud.api.deps import RequestRoute
from aicloud.platform import policy
from aicloud.shared.errors import NotFound, ValidationFailed

router = APIRouter(tags=["policy: quotas"], route_class=RequestRoute)

SCOPE = path_param("scope_id")
ResourceKey = Annotated[str, Path(description="What is limited, e.g. gpu or gpu:H100",
                                  max_length=64)]


class QuotaLimit(BaseModel):
    limit: int = Field(ge=0, le=1_000_000, description="Maximum units in use at once")


def _path(caller: Caller, scope_id: str) -> str:
    if caller.snapshot().kind.get(scope_id) not in ("org", "department", "project"):
        raise ValidationFailed("quotas are set on an organization, department or project")
    return caller.snapshot().scope_path(scope_id)


def _require_write_above(caller: Caller, scope_id: str) -> str:
    """The scope's path, once the caller may write quotas on the scope's parent."""
    path = _path(caller, scope_id)
    caller.require("policy.quotas.write", caller.snapshot().parent[scope_id], hidden=False)
    return path


@router.get("/scopes/{scope_id}/quotas", response_model=list[policy.Quota])
def list_quotas(scope_id: str,
                caller: Annotated[Caller, Authorize("policy.quotas.read", scope=SCOPE)]
                ) -> list[policy.Quota]:
    """The quotas that apply to the scope: its own and those of every scope above it."""
    return policy.list_quotas(caller.session, _path(caller, scope_id))


@router.put("/scopes/{scope_id}/quotas/{resource_key}", response_model=policy.Quota)
def set_quota(scope_id: str, resource_key: ResourceKey, body: QuotaLimit,
              caller: Annotated[Caller, Authorize("policy.quotas.read", scope=SCOPE)]
              ) -> policy.Quota:
    """Create or change a limit (needs ``policy.quotas.write`` on the parent scope)."""
    path = _require_write_above(caller, scope_id)
    return policy.set_quota(caller.session, actor=caller.actor, scope_path=path,
                            resource_key=resource_key, limit=body.limit)


@router.delete("/scopes/{scope_id}/quotas/{resource_key}", status_code=204)
def clear_quota(scope_id: str, resource_key: ResourceKey,
                caller: Annotated[Caller, Authorize("policy.quotas.read", scope=SCOPE)]
                ) -> Response:
    """Remove a limit (needs ``policy.quotas.write`` on the parent scope)."""
    path = _require_write_above(caller, scope_id)
    if not policy.clear_quota(caller.session, actor=caller.actor, scope_path=path,
                              resource_key=resource_key):
        raise NotFound(f"no quota {resource_key} at this scope")
    return Response(status_code=204)
