"""Users, groups, service accounts and API keys."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Response

from aicloud.api.authz import (
    PLATFORM_SCOPE,
    Authenticated,
    Authorize,
    Caller,
    path_param,
)
from aicloud.api.deps import RequestRoute
from aicloud.api.idempotency import Idempotency
from aicloud.api.listing import DEFAULT, Cursor, Limit, page
from aicloud.platform import iam
from aicloud.shared.errors import NotFound
from aicloud.shared.pagination import Page

router = APIRouter(tags=["iam: principals"], route_class=RequestRoute)

ORG = path_param("org_id")
PRJ = path_param("project_id")
GROUP = path_param("group_id")
SA = path_param("service_account_id")
KEY = path_param("api_key_id")


# --- users -----------------------------------------------------------------------------------


@router.post("/users", status_code=201, response_model=iam.User)
def create_user(body: iam.UserCreate, idem: Idempotency,
                caller: Annotated[Caller, Authorize("iam.users.create", scope=PLATFORM_SCOPE)],
                ) -> Response:
    """Create a user account (platform administrators; tenants invite instead)."""
    return idem.respond(caller.session, lambda: iam.user_model_to_user(iam.create_user(
        caller.session, email=body.email, display_name=body.display_name,
        password=body.password, actor=caller.actor)), status_code=201)


def _readable_user_ids(caller: Caller) -> list[str] | None:
    """None: every user (platform readers); else the caller and the members of the
    organizations where the caller may read users."""
    if caller.can("iam.users.read", iam.PLATFORM):
        return None
    orgs = caller.visible("iam.users.read", "org")
    return sorted(iam.users_of_orgs(caller.session, orgs) | {caller.id})


@router.get("/users", response_model=Page[iam.User])
def list_users(caller: Authenticated, cursor: Cursor = None,
               limit: Limit = DEFAULT) -> Page[iam.User]:
    """Users the caller may see: themselves and the members of organizations they manage."""
    ids = _readable_user_ids(caller)
    return page(lambda after, n: iam.list_users(caller.session, ids, after=after, limit=n),
                cursor, limit)


@router.get("/users/{user_id}", response_model=iam.User)
def get_user(user_id: str, caller: Authenticated) -> iam.User:
    ids = _readable_user_ids(caller)
    if ids is not None and user_id not in ids:
        raise NotFound("not found")
    return iam.get_user(caller.session, user_id)


@router.patch("/users/{user_id}", response_model=iam.User)
def update_user(user_id: str, body: iam.UserUpdate,
                caller: Annotated[Caller, Authorize("iam.users.update",
                                                    scope=path_param("user_id"))],
                ) -> iam.User:
    """Change a user's display name or disable them (platform administrators)."""
    return iam.update_user(caller.session, user_id, body, actor=caller.actor)


# --- groups ----------------------------------------------------------------------------------


@router.post("/orgs/{org_id}/groups", status_code=201, response_model=iam.Group)
def create_group(org_id: str, body: iam.GroupCreate, idem: Idempotency,
                 caller: Annotated[Caller, Authorize("iam.groups.create", scope=ORG)],
                 ) -> Response:
    return idem.respond(caller.session, lambda: iam.create_group(
        caller.session, org_id, body.name, actor=caller.actor), status_code=201)


@router.get("/orgs/{org_id}/groups", response_model=Page[iam.Group])
def list_groups(org_id: str, caller: Annotated[Caller, Authorize("iam.groups.read", scope=ORG)],
                cursor: Cursor = None, limit: Limit = DEFAULT) -> Page[iam.Group]:
    return page(lambda after, n: iam.list_groups(caller.session, org_id, after=after, limit=n),
                cursor, limit)


@router.get("/groups/{group_id}", response_model=iam.Group)
def get_group(group_id: str, caller: Annotated[Caller, Authorize("iam.groups.read",
                                                                 scope=GROUP)]) -> iam.Group:
    return iam.group_model_to_group(iam.get_group_model(caller.session, group_id))


@router.delete("/groups/{group_id}", status_code=204)
def delete_group(group_id: str, caller: Annotated[Caller, Authorize("iam.groups.delete",
                                                                    scope=GROUP)]) -> Response:
    iam.delete_group(caller.session, group_id, actor=caller.actor)
    return Response(status_code=204)


@router.get("/groups/{group_id}/members", response_model=iam.GroupMembers)
def list_group_members(group_id: str, caller: Annotated[Caller, Authorize(
        "iam.groups.read", scope=GROUP)]) -> iam.GroupMembers:
    return iam.GroupMembers(group_id=group_id,
                            user_ids=iam.group_members(caller.session, group_id))


@router.put("/groups/{group_id}/members/{user_id}", status_code=204)
def add_group_member(group_id: str, user_id: str, caller: Annotated[Caller, Authorize(
        "iam.groups.update", scope=GROUP)]) -> Response:
    """Add a member of the organization (bound in it, or invited) to the group. The caller
    must hold every role bound to the group (joining grants them)."""
    iam.add_group_member(caller.session, group_id, user_id, actor=caller.actor,
                         grantor=caller.principal)
    return Response(status_code=204)


@router.delete("/groups/{group_id}/members/{user_id}", status_code=204)
def remove_group_member(group_id: str, user_id: str, caller: Annotated[Caller, Authorize(
        "iam.groups.update", scope=GROUP)]) -> Response:
    iam.remove_group_member(caller.session, group_id, user_id, actor=caller.actor)
    return Response(status_code=204)


# --- service accounts ------------------------------------------------------------------------


def _owner_scopes(caller: Caller, permission: str) -> list[str]:
    """Scopes whose service accounts the caller may see with ``permission``: organizations,
    projects, and the platform (its own service accounts) when allowed there."""
    scopes = caller.visible(permission, "org") + caller.visible(permission, "project")
    if caller.can(permission, iam.PLATFORM):
        scopes.append(iam.PLATFORM)
    return scopes


@router.post("/service-accounts", status_code=201, response_model=iam.ServiceAccount)
def create_platform_service_account(body: iam.ServiceAccountCreate, idem: Idempotency,
                                    caller: Annotated[Caller, Authorize(
                                        "iam.service_accounts.create",
                                        scope=PLATFORM_SCOPE)]) -> Response:
    """A service account owned by the platform, e.g. a product's (platform administrators).
    It can be bound only at the platform scope (``POST /scopes/platform/bindings``)."""
    return idem.respond(caller.session, lambda: iam.create_service_account(
        caller.session, iam.PLATFORM, body.name, actor=caller.actor), status_code=201)


@router.post("/orgs/{org_id}/service-accounts", status_code=201,
             response_model=iam.ServiceAccount)
def create_org_service_account(org_id: str, body: iam.ServiceAccountCreate, idem: Idempotency,
                               caller: Annotated[Caller, Authorize(
                                   "iam.service_accounts.create", scope=ORG)]) -> Response:
    return idem.respond(caller.session, lambda: iam.create_service_account(
        caller.session, org_id, body.name, actor=caller.actor), status_code=201)


@router.post("/projects/{project_id}/service-accounts", status_code=201,
             response_model=iam.ServiceAccount)
def create_project_service_account(project_id: str, body: iam.ServiceAccountCreate,
                                   idem: Idempotency, caller: Annotated[Caller, Authorize(
                                       "iam.service_accounts.create", scope=PRJ)]) -> Response:
    return idem.respond(caller.session, lambda: iam.create_service_account(
        caller.session, project_id, body.name, actor=caller.actor), status_code=201)


@router.get("/service-accounts", response_model=Page[iam.ServiceAccount])
def list_service_accounts(caller: Authenticated, cursor: Cursor = None,
                          limit: Limit = DEFAULT) -> Page[iam.ServiceAccount]:
    """Service accounts of the organizations and projects where the caller may read them
    (and the platform's own for platform readers)."""
    scopes = _owner_scopes(caller, "iam.service_accounts.read")
    return page(lambda after, n: iam.list_service_accounts(
        caller.session, scope_ids=scopes, after=after, limit=n), cursor, limit)


@router.get("/service-accounts/{service_account_id}", response_model=iam.ServiceAccount)
def get_service_account(service_account_id: str, caller: Annotated[Caller, Authorize(
        "iam.service_accounts.read", scope=SA)]) -> iam.ServiceAccount:
    return iam.sa_model_to_sa(iam.get_service_account_model(caller.session, service_account_id))


@router.patch("/service-accounts/{service_account_id}", response_model=iam.ServiceAccount)
def update_service_account(service_account_id: str, body: iam.ServiceAccountUpdate,
                           caller: Annotated[Caller, Authorize(
                               "iam.service_accounts.update", scope=SA)]) -> iam.ServiceAccount:
    """Disable (or re-enable) a service account; its keys stop working at once."""
    return iam.set_service_account_disabled(caller.session, service_account_id, body.disabled,
                                            actor=caller.actor, grantor=caller.principal)


@router.delete("/service-accounts/{service_account_id}", status_code=204)
def delete_service_account(service_account_id: str, caller: Annotated[Caller, Authorize(
        "iam.service_accounts.delete", scope=SA)]) -> Response:
    iam.delete_service_account(caller.session, service_account_id, actor=caller.actor)
    return Response(status_code=204)


# --- API keys --------------------------------------------------------------------------------


def _check_key_scope(caller: Caller, body: iam.ApiKeyCreate) -> None:
    """A key may be narrowed only to a scope the caller can see (else the answer would tell
    whether another tenant's id exists)."""
    if body.scope_id is not None and body.scope_id != iam.PLATFORM and not (
            caller.snapshot().has_any_grant(caller.principal, body.scope_id)):
        raise NotFound(f"scope {body.scope_id} not found")


@router.post("/api-keys", status_code=201, response_model=iam.ApiKeyCreated)
def create_own_api_key(body: iam.ApiKeyCreate, idem: Idempotency,
                       caller: Authenticated) -> Response:
    """Create an API key acting as yourself (optionally narrowed). The secret is shown once.
    An API key cannot mint keys for its own principal."""
    _check_key_scope(caller, body)
    return idem.respond(caller.session, lambda: iam.create_api_key(
        caller.session, caller.id, body, actor=caller.actor, grantor=caller.principal),
        status_code=201)


@router.post("/service-accounts/{service_account_id}/api-keys", status_code=201,
             response_model=iam.ApiKeyCreated)
def create_service_account_api_key(service_account_id: str, body: iam.ApiKeyCreate,
                                   idem: Idempotency, caller: Annotated[Caller, Authorize(
                                       "iam.api_keys.create", scope=SA)]) -> Response:
    """A key acting as the service account. The caller must hold everything the account is
    bound to; a calling key's narrowing is passed on (never a broader credential)."""
    _check_key_scope(caller, body)
    return idem.respond(caller.session, lambda: iam.create_api_key(
        caller.session, service_account_id, body, actor=caller.actor,
        grantor=caller.principal), status_code=201)


@router.get("/api-keys", response_model=Page[iam.ApiKey])
def list_api_keys(caller: Authenticated, cursor: Cursor = None,
                  limit: Limit = DEFAULT) -> Page[iam.ApiKey]:
    """Your own keys and those of the service accounts whose keys you may read."""
    scopes = _owner_scopes(caller, "iam.api_keys.read")
    owners = [caller.id] + [s.id for s in iam.list_service_accounts(
        caller.session, scope_ids=scopes, after=None, limit=100_000)]
    return page(lambda after, n: iam.list_api_keys(caller.session, owners, after=after,
                                                   limit=n), cursor, limit)


def _key_for_caller(caller: Caller, api_key_id: str, permission: str) -> None:
    """Your own key, or a service account's key you hold ``permission`` on; else 404."""
    try:
        m = iam.get_api_key_model(caller.session, api_key_id)
    except NotFound:
        raise NotFound("not found") from None
    if m.principal_id == caller.id:
        return
    scope = iam.api_key_owner_scope(caller.session, m)
    caller.require(permission, scope or iam.PLATFORM)


@router.get("/api-keys/{api_key_id}", response_model=iam.ApiKey)
def get_api_key(api_key_id: str, caller: Authenticated) -> iam.ApiKey:
    _key_for_caller(caller, api_key_id, "iam.api_keys.read")
    return iam.key_model_to_key(iam.get_api_key_model(caller.session, api_key_id))


@router.delete("/api-keys/{api_key_id}", response_model=iam.ApiKey)
def revoke_api_key(api_key_id: str, caller: Authenticated) -> iam.ApiKey:
    """Revoke a key at once; it stays listed with its revocation time."""
    _key_for_caller(caller, api_key_id, "iam.api_keys.delete")
    return iam.revoke_api_key(caller.session, api_key_id, actor=caller.actor)
