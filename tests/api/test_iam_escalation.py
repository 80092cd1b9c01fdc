"""Nobody grants what they do not hold, over the API, on SQLite and PostgreSQL.

Each test starts from what an attacker inside one tenant can call (a project admin, an org
admin, a narrowed API key) and checks both the refusal and that the refused power really was
not obtained (the top-up route and another tenant's organization are the witnesses).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from fastapi.testclient import TestClient

from aicloud.runtime import AppContext
from tests.isolation import Tenant, admin_client, make_tenant, make_user


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@dataclass
class World:
    client: TestClient
    admin: str  # platform admin's session token
    a: Tenant
    b: Tenant
    project: str  # a project of A
    padmin_id: str  # A's project admin (user id) and session
    padmin: dict[str, str]
    oadmin_id: str  # A's org admin
    oadmin: dict[str, str]

    def call(self, method: str, path: str, who: dict[str, str], body: object = None) -> int:
        resp = self.client.request(method, path, json=body, headers=who)
        return resp.status_code

    def bind(self, scope: str, who: dict[str, str], principal: str, role: str,
             resource: dict[str, str] | None = None) -> int:
        body: dict[str, object] = {"principal_id": principal, "role_id": role}
        if resource is not None:
            body["resource"] = resource
        return self.call("POST", f"/scopes/{scope}/bindings", who, body)

    def can_create_orgs(self, who: dict[str, str]) -> bool:
        return self.call("POST", "/orgs", who, {"name": "stolen"}) == 201

    def can_top_up(self, who: dict[str, str], org: str) -> bool:
        return self.call("POST", f"/orgs/{org}/top-ups", who, {
            "amount": 1_000_000, "currency": "USD", "idempotency_key": "x"}) == 201


@pytest.fixture
def world(ctx: AppContext) -> Iterator[World]:
    with admin_client(ctx) as (client, admin):
        a, b = make_tenant(client, admin, "alpha"), make_tenant(client, admin, "beta")
        project = a.get("project_id")
        padmin_id, padmin = make_user(client, admin, "padmin@alpha.example", project,
                                      "project-admin")
        oadmin_id, oadmin = make_user(client, admin, "oadmin@alpha.example", a.org_id,
                                      "org-admin")
        yield World(client, admin, a, b, project, padmin_id, bearer(padmin), oadmin_id,
                    bearer(oadmin))


def test_a_binding_resource_must_lie_inside_the_scope(world: World) -> None:
    w = world
    b_instance = w.b.get("instance_id")
    for resource, role, status in (
        ({"type": "x", "id": "platform"}, "platform-admin", 422),  # not a resource type
        ({"type": "x", "id": w.b.org_id}, "org-owner", 422),
        ({"type": "instance", "id": w.b.org_id}, "project-viewer", 404),  # not an instance
        ({"type": "instance", "id": b_instance}, "project-viewer", 404),  # another project's
        ({"type": "instance", "id": "inst_missing"}, "project-viewer", 404),
    ):
        got = w.bind(w.project, w.padmin, w.padmin_id, role, resource)
        assert got == status, (resource, role, got)
        # Deny bindings name resources the same way (the owner: project admins deny nothing).
        deny = w.call("POST", f"/scopes/{w.project}/deny-bindings", w.a.headers,
                      {"principal_id": w.padmin_id, "permission": "gpuaas.instances.read",
                       "resource": resource})
        assert deny == status, (resource, deny)
    # The witnesses: still no platform power, still nothing of B.
    assert not w.can_create_orgs(w.padmin)
    assert not w.can_top_up(w.padmin, w.a.org_id)
    assert w.call("GET", f"/orgs/{w.b.org_id}", w.padmin) == 404
    assert w.call("PATCH", f"/orgs/{w.b.org_id}", w.padmin, {"name": "pwned"}) == 404
    # A real resource of the project is bindable (by whoever holds the role's permissions).
    own = w.a.get("instance_id")
    assert w.bind(w.project, w.padmin, w.padmin_id, "project-viewer",
                  {"type": "instance", "id": own}) == 201


def test_platform_roles_are_bound_only_at_the_platform(world: World) -> None:
    w = world
    for role in ("platform-admin", "platform-operator", "product-biller"):
        assert w.bind(w.project, w.padmin, w.padmin_id, role) == 422
        assert w.bind(w.a.org_id, w.a.headers, w.a.owner_id, role) == 422
        # At the platform, tenants are not even let in.
        assert w.bind("platform", w.a.headers, w.a.owner_id, role) in (403, 404)
    assert not w.can_create_orgs(w.padmin) and not w.can_create_orgs(w.a.headers)
    assert not w.can_top_up(w.a.headers, w.a.org_id)
    # A platform admin does bind them at the platform.
    assert w.bind("platform", bearer(w.admin), w.padmin_id, "platform-operator") == 201


def test_no_one_binds_a_role_they_do_not_hold(world: World) -> None:
    w = world
    # An org admin makes itself owner; a project admin makes itself org-owner on its project.
    assert w.bind(w.a.org_id, w.oadmin, w.oadmin_id, "org-owner") == 403
    assert w.bind(w.project, w.padmin, w.padmin_id, "org-owner") == 403
    assert w.bind(w.project, w.padmin, w.padmin_id, "billing-admin") == 403
    assert w.call("POST", f"/orgs/{w.a.org_id}/budgets", w.oadmin,
                  {"amount": 1, "currency": "USD"}) in (403, 404, 422)
    # What one holds is grantable: a project admin makes a member, an org admin a peer.
    member_id, _ = make_user(w.client, w.admin, "m@alpha.example", w.project, "project-viewer")
    assert w.bind(w.project, w.padmin, member_id, "project-member") == 201
    assert w.bind(w.project, w.padmin, member_id, "project-admin") == 201
    assert w.bind(w.a.org_id, w.oadmin, member_id, "org-admin") == 201
    # Deny bindings of the caller count: the owner denied instance deletion cannot hand it on.
    deny = w.client.post(f"/scopes/{w.a.org_id}/deny-bindings", headers=bearer(w.admin),
                         json={"principal_id": w.a.owner_id,
                               "permission": "gpuaas.instances.delete"})
    assert deny.status_code == 201, deny.text
    assert w.bind(w.project, w.a.headers, member_id, "project-member") == 403
    assert w.bind(w.a.get("department_id"), w.a.headers, member_id, "project-viewer") == 201


def test_custom_roles_stay_within_the_grantable_set_and_the_creator(world: World) -> None:
    w = world
    path = f"/orgs/{w.a.org_id}/roles"
    for who in (w.oadmin, w.a.headers, bearer(w.admin)):  # even a platform admin
        for perms in (["*"], ["billing.topups.create"], ["iam.orgs.*"], ["gpuaas.nodes.*"]):
            resp = w.client.post(path, headers=who, json={"name": "all", "permissions": perms})
            assert resp.status_code == 422, (perms, resp.text)
    # Inside the grantable set, only what the creator holds: an org admin reads billing only.
    assert w.call("POST", path, w.oadmin, {"name": "spender",
                                           "permissions": ["billing.budgets.write"]}) == 403
    ok = w.client.post(path, headers=w.oadmin, json={"name": "gpu",
                                                     "permissions": ["gpuaas.instances.*"]})
    assert ok.status_code == 201, ok.text
    assert w.bind(w.project, w.padmin, w.padmin_id, ok.json()["id"]) == 201
    # An owner's role with billing.* patterns would reach top-ups: refused as a pattern too.
    assert w.call("POST", path, w.a.headers, {"name": "money",
                                              "permissions": ["billing.*"]}) == 422
    assert not w.can_top_up(w.a.headers, w.a.org_id)


def test_invitations_and_denies_follow_the_escalation_rule(world: World) -> None:
    w = world
    inv = f"/scopes/{w.project}/invitations"
    assert w.call("POST", inv, w.padmin, {"email": "x@evil.example", "role_id": "org-owner"}) \
        == 403
    assert w.call("POST", inv, w.padmin, {"email": "x@evil.example",
                                          "role_id": "platform-admin"}) == 422
    assert w.call("POST", inv, w.padmin, {"email": "x@ok.example",
                                          "role_id": "project-member"}) == 201
    # A deny of what the caller does not hold (an org admin: billing writes) is refused; of
    # what it holds, allowed.
    deny = f"/scopes/{w.project}/deny-bindings"
    assert w.call("POST", deny, w.oadmin, {"principal_id": w.padmin_id,
                                           "permission": "billing.*"}) == 403
    assert w.call("POST", deny, w.oadmin, {"principal_id": w.padmin_id,
                                           "permission": "gpuaas.instances.delete"}) == 201


def test_a_denied_admin_cannot_lift_its_own_deny(world: World) -> None:
    w = world
    deny = w.a.post(f"/scopes/{w.a.org_id}/deny-bindings",
                    {"principal_id": w.oadmin_id, "permission": "gpuaas.instances.*"})
    # The org admin holds iam.deny_bindings.write, but lifting the deny would give it back
    # what it is denied.
    assert w.call("DELETE", f"/deny-bindings/{deny['id']}", w.oadmin) == 403
    assert w.call("GET", f"/projects/{w.project}/instances", w.oadmin) == 403
    assert w.call("DELETE", f"/deny-bindings/{deny['id']}", w.a.headers) == 204


def test_joining_a_group_grants_its_roles(world: World) -> None:
    w = world
    group = w.a.post(f"/orgs/{w.a.org_id}/groups", {"name": "owners"})["id"]
    assert w.bind(w.a.org_id, w.a.headers, group, "org-owner") == 201
    # The org admin (iam.groups.update) puts itself in the owners' group: refused.
    assert w.call("PUT", f"/groups/{group}/members/{w.oadmin_id}", w.oadmin) == 403
    assert w.call("POST", f"/orgs/{w.a.org_id}/top-ups", w.oadmin,
                  {"amount": 1, "currency": "USD", "idempotency_key": "k"}) in (403, 404)
    assert w.call("PUT", f"/groups/{group}/members/{w.oadmin_id}", w.a.headers) == 204
    # Another organization's user is unknown to A's group (404), even to A's owner.
    assert w.call("PUT", f"/groups/{group}/members/{w.b.owner_id}", w.a.headers) == 404


def test_a_key_never_mints_a_broader_credential(world: World) -> None:
    w = world
    sa = w.client.post(f"/projects/{w.project}/service-accounts", headers=w.a.headers,
                       json={"name": "ci"}).json()["id"]
    narrow = w.client.post("/api-keys", headers=w.a.headers, json={
        "name": "only-keys", "permissions": ["iam.api_keys.create"], "scope_id": w.project})
    assert narrow.status_code == 201, narrow.text
    key = bearer(narrow.json()["secret"])
    # The key asks for an unlimited key of the service account: it gets one narrowed like
    # itself, or a 403 when it asks for more explicitly.
    minted = w.client.post(f"/service-accounts/{sa}/api-keys", headers=key,
                           json={"name": "child"})
    assert minted.status_code == 201, minted.text
    assert minted.json()["permissions"] == ["iam.api_keys.create"]
    assert minted.json()["scope_id"] == w.project
    child = bearer(minted.json()["secret"])
    assert w.call("GET", f"/projects/{w.project}", child) in (403, 404)
    for body in ({"name": "c", "permissions": ["*"]},
                 {"name": "c", "permissions": ["iam.api_keys.create", "iam.projects.read"]},
                 {"name": "c", "scope_id": w.a.org_id}):
        # (a scope outside the key's is unknown to it: 404)
        assert w.call("POST", f"/service-accounts/{sa}/api-keys", key, body) in (403, 404), body
    assert w.call("POST", "/api-keys", key, {"name": "self"}) == 403
    # A key narrowed to binding cannot bind roles beyond its own permissions either.
    binder = w.client.post("/api-keys", headers=w.a.headers, json={
        "name": "binder", "permissions": ["iam.bindings.write"]}).json()["secret"]
    assert w.bind(w.project, bearer(binder), sa, "project-member") == 403
    # A service account bound above the caller's reach: its keys are refused to the project
    # admin (minting one would be acting as an org owner).
    assert w.bind(w.a.org_id, w.a.headers, sa, "org-owner") == 201
    assert w.call("POST", f"/service-accounts/{sa}/api-keys", w.padmin, {"name": "k"}) == 403
    assert w.call("POST", f"/service-accounts/{sa}/api-keys", w.a.headers, {"name": "k"}) \
        == 201
    # Nor may the project admin revive it once the owner disabled it (its keys would work
    # again as an org owner).
    sa_path = f"/service-accounts/{sa}"
    assert w.call("PATCH", sa_path, w.a.headers, {"disabled": True}) == 200
    assert w.call("PATCH", sa_path, w.padmin, {"disabled": False}) == 403
    assert w.call("PATCH", sa_path, w.a.headers, {"disabled": False}) == 200


def test_disabling_a_user_kills_their_credentials_for_good(world: World) -> None:
    w = world
    admin = bearer(w.admin)
    key = w.client.post("/api-keys", headers=w.padmin, json={"name": "mine"}).json()["secret"]
    for token in (w.padmin, bearer(key)):
        assert w.call("GET", "/auth/me", token) == 200
    assert w.call("PATCH", f"/users/{w.padmin_id}", admin, {"disabled": True}) == 200
    assert w.call("PATCH", f"/users/{w.padmin_id}", admin, {"disabled": False}) == 200
    for token in (w.padmin, bearer(key)):  # re-enabling revives nothing issued before
        assert w.call("GET", "/auth/me", token) == 401
    fresh = w.client.post("/auth/login", json={"email": "padmin@alpha.example",
                                               "password": "correct horse battery staple"})
    assert fresh.status_code == 200
    keys = w.client.get("/api-keys", headers=bearer(fresh.json()["token"])).json()["items"]
    assert keys and all(k["revoked_at"] for k in keys)


def test_the_last_platform_admin_stays(world: World) -> None:
    w = world
    admin = bearer(w.admin)
    root = w.client.get("/auth/me", headers=admin).json()["id"]
    binding = next(b for b in w.client.get("/scopes/platform/bindings", headers=admin)
                   .json()["items"] if b["principal_id"] == root)
    assert w.call("PATCH", f"/users/{root}", admin, {"disabled": True}) == 409
    assert w.call("DELETE", f"/bindings/{binding['id']}", admin) == 409
    assert w.call("GET", "/auth/me", admin) == 200
    # With a second administrator, either may go.
    assert w.bind("platform", admin, w.a.owner_id, "platform-admin") == 201
    assert w.call("DELETE", f"/bindings/{binding['id']}", admin) == 204
    assert w.call("PATCH", f"/users/{root}", w.a.headers, {"disabled": True}) == 200
    # ...but then the remaining one cannot remove itself.
    assert w.call("PATCH", f"/users/{w.a.owner_id}", w.a.headers, {"disabled": True}) == 409


def test_naive_datetimes_are_422(world: World) -> None:
    w = world
    for when in ("2099-01-01T00:00:00", "2099-01-01 00:00"):
        resp = w.client.post("/api-keys", headers=w.a.headers,
                             json={"name": "k", "expires_at": when})
        assert resp.status_code == 422, resp.text
    ok = w.client.post("/api-keys", headers=w.a.headers,
                       json={"name": "k", "expires_at": "2099-01-01T00:00:00+02:00"})
    assert ok.status_code == 201, ok.text
