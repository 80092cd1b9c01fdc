"""The IAM API end to end: declarations, 404 versus 403, API keys, throttling, invitations,
explain, and moving a project."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

import pytest
from fastapi import APIRouter, FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import select

from aicloud.api import create_app
from aicloud.api.authz import UndeclaredRouteAccess, check_route_declarations
from aicloud.platform import iam
from aicloud.platform.audit.models import AuditEventModel
from aicloud.runtime import AppContext
from aicloud.shared.clock import utcnow
from tests.isolation import Tenant, make_tenant

PASSWORD = "correct horse battery staple"


@pytest.fixture
def api(ctx: AppContext) -> Iterator[tuple[TestClient, str]]:
    with ctx.db.transaction() as s:
        iam.bootstrap_admin(s, email="root@example.org", password=PASSWORD)
    with TestClient(create_app(ctx), raise_server_exceptions=False) as client:
        token = login(client, "root@example.org")
        yield client, token


def login(client: TestClient, email: str, password: str = PASSWORD) -> str:
    resp = client.post("/auth/login", json={"email": email, "password": password})
    assert resp.status_code == 200, resp.text
    return resp.json()["token"]


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def add_member(client: TestClient, admin: str, tenant: Tenant, scope: str, role: str,
               name: str) -> str:
    """A new user bound to ``role`` at ``scope``; returns their session token."""
    user = client.post("/users", json={"email": f"{name}@x.example", "password": PASSWORD},
                       headers=bearer(admin)).json()
    # Binding a user from outside the org takes a platform admin (tenants invite).
    resp = client.post(f"/scopes/{scope}/bindings", headers=bearer(admin),
                       json={"principal_id": user["id"], "role_id": role})
    assert resp.status_code == 201, resp.text
    return login(client, user["email"])


def test_a_route_without_declaration_stops_the_app(ctx: AppContext) -> None:
    app = create_app(ctx)
    assert app.state.route_access["GET /healthz"] == "public"
    assert app.state.route_access["GET /auth/me"] == "authenticated"
    assert app.state.route_access["DELETE /projects/{project_id}"] == (
        "iam.projects.delete on project_id")
    router = APIRouter()

    @router.get("/undeclared")
    def undeclared() -> None:
        return None

    app.include_router(router)
    with pytest.raises(UndeclaredRouteAccess, match="GET /undeclared"):
        check_route_declarations(app)
    # Added after create_app: the lifespan check refuses to start.
    with pytest.raises(UndeclaredRouteAccess), TestClient(app):
        pass
    bare = FastAPI()
    bare.get("/x")(lambda: None)
    with pytest.raises(UndeclaredRouteAccess):
        check_route_declarations(bare)


def test_bootstrap_admin_is_platform_admin(api: tuple[TestClient, str]) -> None:
    client, admin = api
    me = client.get("/auth/me", headers=bearer(admin)).json()
    resp = client.get("/iam/explain", headers=bearer(admin), params={
        "principal_id": me["id"], "permission": "iam.orgs.create", "scope_id": "platform"})
    assert resp.json()["allowed"] and resp.json()["role_id"] == "platform-admin"


def test_404_for_the_unknown_403_for_the_visible(api: tuple[TestClient, str]) -> None:
    client, admin = api
    a = make_tenant(client, admin, "alpha")
    prj = a.get("project_id")
    viewer = add_member(client, admin, a, prj, "project-viewer", "viewer")
    outsider = make_tenant(client, admin, "beta")
    assert client.get(f"/projects/{prj}", headers=bearer(viewer)).status_code == 200
    denied = client.delete(f"/projects/{prj}", headers=bearer(viewer))
    assert denied.status_code == 403 and "iam.projects.delete" in denied.json()["detail"]
    # The viewer has nothing at the org: the org is as good as nonexistent to them.
    assert client.get(f"/orgs/{a.org_id}", headers=bearer(viewer)).status_code == 404
    assert client.delete(f"/projects/{prj}", headers=outsider.headers).status_code == 404
    unknown = client.get("/projects/prj_01JZZZZZZZZZZZZZZZZZZZZZZZ", headers=a.headers)
    assert unknown.status_code == 404
    # Platform-level actions are refused with 403 (nothing to hide).
    assert client.post("/orgs", json={"name": "x"}, headers=a.headers).status_code == 403
    # Listings: the viewer sees only the project it is bound to.
    listed = client.get("/projects", headers=bearer(viewer)).json()
    assert [p["id"] for p in listed["items"]] == [prj]
    assert client.get("/orgs", headers=bearer(viewer)).json()["items"] == []


def test_list_pagination_follows_the_cursor(api: tuple[TestClient, str]) -> None:
    client, admin = api
    a = make_tenant(client, admin, "alpha")
    made = {a.post(f"/orgs/{a.org_id}/projects", {"name": f"p{i}"})["id"] for i in range(5)}
    seen: list[str] = []
    cursor = None
    while True:
        params = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        page = client.get("/projects", params=params, headers=a.headers).json()
        seen += [p["id"] for p in page["items"]]
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert set(seen) == made and len(seen) == 5 and seen == sorted(seen)


def test_moving_a_project_over_the_api(api: tuple[TestClient, str]) -> None:
    client, admin = api
    a = make_tenant(client, admin, "alpha")
    dep1 = a.get("department_id")
    dep2 = a.post(f"/orgs/{a.org_id}/departments", {"name": "ops"})["id"]
    prj = a.get("project_id")  # in dep1
    dep_admin = add_member(client, admin, a, dep1, "department-admin", "depadmin")
    assert client.get(f"/projects/{prj}", headers=bearer(dep_admin)).status_code == 200
    # The department admin cannot move it to a department they cannot even see.
    resp = client.post(f"/projects/{prj}/move", json={"department_id": dep2},
                       headers=bearer(dep_admin))
    assert resp.status_code == 404
    moved = client.post(f"/projects/{prj}/move", json={"department_id": dep2},
                        headers=a.headers)
    assert moved.status_code == 200
    assert moved.json()["scope_path"] == f"/{a.org_id}/{dep2}/{prj}"
    assert client.get(f"/projects/{prj}", headers=bearer(dep_admin)).status_code == 404


def test_explain_names_the_binding_or_the_deny(api: tuple[TestClient, str]) -> None:
    client, admin = api
    a = make_tenant(client, admin, "alpha")
    prj = a.get("project_id")
    member = add_member(client, admin, a, a.get("department_id"), "project-member", "m")
    member_id = client.get("/auth/me", headers=bearer(member)).json()["id"]
    q = {"principal_id": member_id, "permission": "gpuaas.instances.create", "scope_id": prj}
    allowed = client.get("/iam/explain", params=q, headers=a.headers).json()
    assert allowed["allowed"] and allowed["role_id"] == "project-member"
    assert allowed["path"] == [prj, a.get("department_id"), a.org_id, "platform"]
    deny = a.post(f"/scopes/{prj}/deny-bindings", {"principal_id": member_id,
                                                    "permission": "gpuaas.instances.create"})
    denied = client.get("/iam/explain", params=q, headers=a.headers).json()
    assert not denied["allowed"] and denied["deny_binding_id"] == deny["id"]
    # A resource must exist in the project, of a type a product registered.
    for rtype, status in (("instance", 404), ("gpuaas.instance", 422)):
        r = client.get("/iam/explain", params={**q, "resource_type": rtype,
                                               "resource_id": "inst_x"}, headers=a.headers)
        assert r.status_code == status, r.text
    # Members may not ask (they see the project: 403); undeclared permissions are a 422.
    assert client.get("/iam/explain", params=q, headers=bearer(member)).status_code == 403
    bad = client.get("/iam/explain", params={**q, "permission": "x.y.z"}, headers=a.headers)
    assert bad.status_code == 422


def test_api_keys_act_as_their_principal_narrowed(ctx: AppContext,
                                                 api: tuple[TestClient, str]) -> None:
    client, admin = api
    a = make_tenant(client, admin, "alpha")
    prj = a.get("project_id")
    other_prj = a.post(f"/orgs/{a.org_id}/projects", {"name": "other"})["id"]
    sa = a.get("service_account_id")
    a.post(f"/scopes/{prj}/bindings", {"principal_id": sa, "role_id": "project-admin"})
    key = a.post(f"/service-accounts/{sa}/api-keys", {
        "name": "ci", "permissions": ["iam.projects.read"]})
    assert key["secret"].startswith("aick_")
    listed = client.get("/api-keys", headers=a.headers).text
    assert key["id"] in listed and key["secret"] not in listed
    k = bearer(key["secret"])
    assert client.get("/auth/me", headers=k).json()["id"] == sa
    assert client.get(f"/projects/{prj}", headers=k).status_code == 200
    # Narrowed to iam.projects.read: the role's other permissions are gone.
    assert client.patch(f"/projects/{prj}", json={"name": "x"}, headers=k).status_code == 403
    assert client.post("/api-keys", json={"name": "x"}, headers=k).status_code == 403
    # An owner's own key narrowed to one project.
    own = a.post("/api-keys", {"name": "mine", "scope_id": prj})
    mine = bearer(own["secret"])
    assert client.get(f"/projects/{prj}", headers=mine).status_code == 200
    assert client.get(f"/projects/{other_prj}", headers=mine).status_code == 404
    assert client.get(f"/projects/{other_prj}", headers=a.headers).status_code == 200
    # The use is noted and written by the API process's flusher (coalesced, off the request).
    ctx.credential_usage.flush(ctx.db)
    with ctx.db.transaction() as s:
        assert iam.get_api_key_model(s, own["id"]).last_used_at is not None
    # Revoked: refused at once; another tenant cannot revoke it.
    b = make_tenant(client, admin, "beta")
    probe = client.post("/api-keys", json={"name": "probe", "scope_id": prj}, headers=b.headers)
    assert probe.status_code == 404
    assert client.delete(f"/api-keys/{own['id']}", headers=b.headers).status_code == 404
    assert client.delete(f"/api-keys/{own['id']}", headers=a.headers).status_code == 200
    assert client.get(f"/projects/{prj}", headers=mine).status_code == 401
    # Expired keys are refused too.
    with ctx.db.transaction() as s:
        short = iam.create_api_key(s, a.owner_id, iam.ApiKeyCreate(
            name="short", expires_at=utcnow() + timedelta(seconds=60)),
            actor=iam_actor(), grantor=None)
        iam.get_api_key_model(s, short.id).expires_at = utcnow() - timedelta(seconds=1)
    assert client.get("/auth/me", headers=bearer(short.secret)).status_code == 401
    # Disabling the service account stops its keys.
    assert client.get("/auth/me", headers=k).status_code == 200
    off = client.patch(f"/service-accounts/{sa}", json={"disabled": True}, headers=a.headers)
    assert off.status_code == 200 and off.json()["disabled"]
    assert client.get("/auth/me", headers=k).status_code == 401


def iam_actor():  # type: ignore[no-untyped-def]
    from aicloud.platform import audit

    return audit.Actor.system("test")


def test_failed_logins_are_throttled_without_revealing_accounts(
    ctx: AppContext, api: tuple[TestClient, str],
) -> None:
    client, _ = api
    for email in ("root@example.org", "nobody@example.org"):
        answers = [client.post("/auth/login", json={"email": email, "password": "wrong"})
                   for _ in range(5)]
        assert [r.status_code for r in answers] == [401] * 5
        assert len({r.json()["detail"] for r in answers}) == 1
        locked = client.post("/auth/login", json={"email": email, "password": PASSWORD})
        assert locked.status_code == 429
    with ctx.db.transaction() as s:
        denied = s.scalars(select(AuditEventModel).where(
            AuditEventModel.outcome == "denied")).all()
    assert len(denied) == 10 and all(e.action == "iam.session.create" for e in denied)


def test_invitation_creates_the_account_and_grants_the_role(
    api: tuple[TestClient, str],
) -> None:
    client, admin = api
    a = make_tenant(client, admin, "alpha")
    prj = a.get("project_id")
    inv = a.post(f"/scopes/{prj}/invitations", {"email": "Newbie@X.example",
                                                "role_id": "project-member"})
    accept = {"token": inv["token"], "password": PASSWORD}
    user = client.post("/invitations/accept", json=accept)
    assert user.status_code == 200 and user.json()["email"] == "newbie@x.example"
    assert client.post("/invitations/accept", json=accept).status_code == 401  # used up
    token = login(client, "newbie@x.example")
    assert client.get(f"/projects/{prj}", headers=bearer(token)).status_code == 200
    # The org owner now sees the new member among the organization's users.
    assert user.json()["id"] in client.get("/users", headers=a.headers).text
    bindings = client.get(f"/scopes/{prj}/bindings", headers=a.headers).json()["items"]
    assert any(b["principal_id"] == user.json()["id"] for b in bindings)


def test_binding_a_stranger_is_404_for_tenant_admins(api: tuple[TestClient, str]) -> None:
    client, admin = api
    a, b = make_tenant(client, admin, "alpha"), make_tenant(client, admin, "beta")
    resp = client.post(f"/scopes/{a.org_id}/bindings", headers=a.headers,
                       json={"principal_id": b.owner_id, "role_id": "org-admin"})
    assert resp.status_code == 404
    assert client.get(f"/users/{b.owner_id}", headers=a.headers).status_code == 404
    group = a.get("group_id")
    stranger = client.put(f"/groups/{group}/members/{b.owner_id}", headers=a.headers)
    assert stranger.status_code == 404
    assert client.put(f"/groups/{group}/members/{a.owner_id}",
                      headers=a.headers).status_code == 204
    assert client.get(f"/users/{a.owner_id}", headers=a.headers).status_code == 200


def test_changes_are_audited_with_the_request_actor(ctx: AppContext,
                                                    api: tuple[TestClient, str]) -> None:
    client, admin = api
    resp = client.post("/orgs", json={"name": "audited"},
                       headers={**bearer(admin), "User-Agent": "pytest-agent",
                                "X-Request-ID": "req-audit-1"})
    assert resp.status_code == 201
    with ctx.db.transaction() as s:
        event = s.scalars(select(AuditEventModel).where(
            AuditEventModel.action == "iam.org.create")).one()
    me = client.get("/auth/me", headers=bearer(admin)).json()
    assert (event.actor_id, event.actor_kind, event.request_id, event.user_agent) == (
        me["id"], "user", "req-audit-1", "pytest-agent")
    assert event.scope_path == f"/{resp.json()['id']}" and event.ip
