"""Roles, role bindings, deny bindings, invitations, the permission catalog and explain."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Response

from aicloud.api.authz import (
    PUBLIC,
    Authenticated,
    Authorize,
    Caller,
    path_param,
    query_param,
    resolve_target,
)
from aicloud.api.deps import DbSession, RequestRoute
from aicloud.api.idempotency import Idempotency
from aicloud.api.listing import DEFAULT, Cursor, Limit, page
from aicloud.platform import iam
from aicloud.shared.pagination import Page

router = APIRouter(tags=["iam: access"], route_class=RequestRoute)

ORG = path_param("org_id")
SCOPE = path_param("scope_id")
ROLE = path_param("role_id")
BINDING = path_param("binding_id")
DENY = path_param("deny_binding_id")
INVITATION = path_param("invitation_id")


# --- roles -----------------------------------------------------------------------------------


@router.get("/permissions", response_model=list[iam.PermissionOut])
def list_permissions(caller: Authenticated) -> list[iam.PermissionOut]:
    """Every declared permission (what roles and deny bindings may name)."""
    return [iam.PermissionOut(name=p.name, description=p.description) for p in iam.CATALOG.all()]


@router.get("/roles", response_model=list[iam.Role])
def list_roles(caller: Authenticated) -> list[iam.Role]:
    """Built-in roles and the custom roles of organizations where the caller may read roles."""
    orgs = None if caller.can("iam.roles.read", iam.PLATFORM) else caller.visible(
        "iam.roles.read", "org")
    return iam.list_roles(caller.session, orgs)


@router.post("/orgs/{org_id}/roles", status_code=201, response_model=iam.Role)
def create_role(org_id: str, body: iam.RoleCreate, idem: Idempotency,
                caller: Annotated[Caller, Authorize("iam.roles.create", scope=ORG)]) -> Response:
    """Define a custom role of the organization from declared permissions or patterns."""
    return idem.respond(caller.session, lambda: iam.create_role(
        caller.session, org_id, body, actor=caller.actor, grantor=caller.principal),
        status_code=201)


@router.get("/roles/{role_id}", response_model=iam.Role)
def get_role(role_id: str, caller: Authenticated) -> iam.Role:
    """Built-in roles are readable by everyone; a custom role by readers of its organization."""
    if role_id not in iam.BUILTIN_ROLES:
        caller.require("iam.roles.read", resolve_target(caller, role_id))
    return iam.get_role(caller.session, role_id)


@router.delete("/roles/{role_id}", status_code=204)
def delete_role(role_id: str,
                caller: Annotated[Caller, Authorize("iam.roles.delete", scope=ROLE)]) -> Response:
    iam.delete_role(caller.session, role_id, actor=caller.actor)
    return Response(status_code=204)


# --- bindings --------------------------------------------------------------------------------


@router.post("/scopes/{scope_id}/bindings", status_code=201, response_model=iam.RoleBinding)
def create_binding(scope_id: str, body: iam.RoleBindingCreate, idem: Idempotency,
                   caller: Annotated[Caller, Authorize("iam.bindings.write", scope=SCOPE)],
                   ) -> Response:
    """Grant a role at a scope ("platform", an organization, department or project), or on
    one resource of a project (``resource``). It applies to everything below. The caller
    must hold every permission of the role there (403 otherwise)."""
    return idem.respond(caller.session, lambda: iam.create_binding(
        caller.session, scope_id, body, actor=caller.actor, grantor=caller.principal),
        status_code=201)


@router.get("/scopes/{scope_id}/bindings", response_model=Page[iam.RoleBinding])
def list_bindings(scope_id: str,
                  caller: Annotated[Caller, Authorize("iam.bindings.read", scope=SCOPE)],
                  cursor: Cursor = None, limit: Limit = DEFAULT) -> Page[iam.RoleBinding]:
    """Bindings made at this scope (and on resources of this project)."""
    return page(lambda after, n: iam.list_bindings(caller.session, scope_id, after=after,
                                                   limit=n), cursor, limit)


@router.get("/bindings/{binding_id}", response_model=iam.RoleBinding)
def get_binding(binding_id: str,
                caller: Annotated[Caller, Authorize("iam.bindings.read", scope=BINDING)],
                ) -> iam.RoleBinding:
    return iam.binding_model_to_binding(iam.get_binding_model(caller.session, binding_id))


@router.delete("/bindings/{binding_id}", status_code=204)
def delete_binding(binding_id: str,
                   caller: Annotated[Caller, Authorize("iam.bindings.write", scope=BINDING)],
                   ) -> Response:
    iam.delete_binding(caller.session, binding_id, actor=caller.actor)
    return Response(status_code=204)


@router.post("/scopes/{scope_id}/deny-bindings", status_code=201,
             response_model=iam.DenyBinding)
def create_deny_binding(scope_id: str, body: iam.DenyBindingCreate, idem: Idempotency,
                        caller: Annotated[Caller, Authorize("iam.deny_bindings.write",
                                                            scope=SCOPE)]) -> Response:
    """Deny permissions matching a pattern at a scope and below, over any allow."""
    return idem.respond(caller.session, lambda: iam.create_deny_binding(
        caller.session, scope_id, body, actor=caller.actor, grantor=caller.principal),
        status_code=201)


@router.get("/scopes/{scope_id}/deny-bindings", response_model=Page[iam.DenyBinding])
def list_deny_bindings(scope_id: str,
                       caller: Annotated[Caller, Authorize("iam.bindings.read", scope=SCOPE)],
                       cursor: Cursor = None, limit: Limit = DEFAULT) -> Page[iam.DenyBinding]:
    return page(lambda after, n: iam.list_deny_bindings(caller.session, scope_id, after=after,
                                                        limit=n), cursor, limit)


@router.get("/deny-bindings/{deny_binding_id}", response_model=iam.DenyBinding)
def get_deny_binding(deny_binding_id: str,
                     caller: Annotated[Caller, Authorize("iam.bindings.read", scope=DENY)],
                     ) -> iam.DenyBinding:
    return iam.deny_model_to_deny(iam.get_deny_binding_model(caller.session, deny_binding_id))


@router.delete("/deny-bindings/{deny_binding_id}", status_code=204)
def delete_deny_binding(deny_binding_id: str,
                        caller: Annotated[Caller, Authorize("iam.deny_bindings.write",
                                                            scope=DENY)]) -> Response:
    iam.delete_deny_binding(caller.session, deny_binding_id, actor=caller.actor,
                            grantor=caller.principal)
    return Response(status_code=204)


# --- invitations -----------------------------------------------------------------------------


@router.post("/scopes/{scope_id}/invitations", status_code=201,
             response_model=iam.InvitationCreated)
def create_invitation(scope_id: str, body: iam.InvitationCreate, idem: Idempotency,
                      caller: Annotated[Caller, Authorize("iam.invitations.create",
                                                          scope=SCOPE)]) -> Response:
    """Invite an email with a role at this scope; the token is shown once."""
    caller.require("iam.bindings.write", scope_id)
    return idem.respond(caller.session, lambda: iam.create_invitation(
        caller.session, scope_id, body, actor=caller.actor, grantor=caller.principal),
        status_code=201)


@router.get("/scopes/{scope_id}/invitations", response_model=Page[iam.Invitation])
def list_invitations(scope_id: str,
                     caller: Annotated[Caller, Authorize("iam.invitations.read", scope=SCOPE)],
                     cursor: Cursor = None, limit: Limit = DEFAULT) -> Page[iam.Invitation]:
    return page(lambda after, n: iam.list_invitations(caller.session, scope_id, after=after,
                                                      limit=n), cursor, limit)


@router.delete("/invitations/{invitation_id}", status_code=204)
def revoke_invitation(invitation_id: str,
                      caller: Annotated[Caller, Authorize("iam.invitations.delete",
                                                          scope=INVITATION)]) -> Response:
    iam.revoke_invitation(caller.session, invitation_id, actor=caller.actor)
    return Response(status_code=204)


@router.post("/invitations/accept", response_model=iam.User, dependencies=[PUBLIC])
def accept_invitation(body: iam.InvitationAccept, session: DbSession) -> iam.User:
    """Accept with the token: creates the account (or checks the existing one's password)
    and grants the invited role."""
    return iam.accept_invitation(session, body)


# --- explain ---------------------------------------------------------------------------------


@router.get("/iam/explain", response_model=iam.DecisionOut)
def explain(
    caller: Annotated[Caller, Authorize("iam.policy.explain", scope=query_param("scope_id"))],
    principal_id: Annotated[str, Query(description="User or service account")],
    permission: Annotated[str, Query(description="e.g. gpuaas.instances.create")],
    scope_id: Annotated[str, Query(description="platform, org, department or project id")],
    resource_type: Annotated[str | None, Query()] = None,
    resource_id: Annotated[str | None, Query(description="A resource of the project")] = None,
) -> iam.DecisionOut:
    """Why can (or can't) a principal do something somewhere: the binding that allows it,
    the deny binding that blocks it, or that none grants it. The principal must belong to
    the scope's organization and the resource to the project (404 otherwise)."""
    d = iam.explain(caller.session, caller.principal, principal_id=principal_id,
                    permission=permission, scope_id=scope_id, resource_type=resource_type,
                    resource_id=resource_id)
    return iam.DecisionOut(allowed=d.allowed, reason=d.reason, binding_id=d.binding_id,
                           role_id=d.role_id, deny_binding_id=d.deny_binding_id,
                           scope_id=d.scope_id, path=list(d.path))
