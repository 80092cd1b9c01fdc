"""GET /audit/events and its JSON Lines export: each reader sees only its own scopes."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from aicloud.platform import audit
from aicloud.runtime import AppContext
from tests.isolation import Tenant, admin_client, make_tenant

PASSWORD = "correct horse battery staple"


@pytest.fixture
def world(ctx: AppContext) -> Iterator[tuple[TestClient, str, Tenant, Tenant]]:
    with admin_client(ctx) as (client, admin):
        alpha, beta = make_tenant(client, admin, "alpha"), make_tenant(client, admin, "beta")
        alpha.get("project_id")
        beta.get("project_id")
        # As the server's audit-sealer controller would (controllers are off in tests): the
        # order checks below compare seqs.
        audit.seal_pending(ctx.db)
        yield client, admin, alpha, beta


def _events(client: TestClient, token: str, **params: str) -> list[dict]:
    out: list[dict] = []
    cursor = None
    while True:
        query = {**params, "limit": "7", **({"cursor": cursor} if cursor else {})}
        resp = client.get("/audit/events", params=query,
                          headers={"Authorization": f"Bearer {token}"})
        assert resp.status_code == 200, resp.text
        body = resp.json()
        out.extend(body["items"])
        cursor = body["next_cursor"]
        if not cursor:
            return out


def _login_as_new_user(client: TestClient, admin: str, email: str) -> tuple[str, str]:
    h = {"Authorization": f"Bearer {admin}"}
    user = client.post("/users", json={"email": email, "password": PASSWORD}, headers=h).json()
    token = client.post("/auth/login", json={"email": email, "password": PASSWORD}).json()
    return user["id"], token["token"]


def test_platform_admin_sees_every_event(world) -> None:  # type: ignore[no-untyped-def]
    client, admin, alpha, beta = world
    events = _events(client, admin)
    paths = {e["scope_path"] for e in events}
    assert any(p.startswith(f"/{alpha.org_id}") for p in paths)
    assert any(p.startswith(f"/{beta.org_id}") for p in paths)
    assert [e["seq"] for e in events] == sorted((e["seq"] for e in events), reverse=True)


def test_org_owner_sees_only_its_organization(world) -> None:  # type: ignore[no-untyped-def]
    client, _admin, alpha, beta = world
    events = _events(client, alpha.token)
    assert events
    assert all(e["scope_path"].startswith(f"/{alpha.org_id}") for e in events)
    assert beta.org_id not in json.dumps(events)
    # asking for another tenant's scope gives nothing rather than an error that confirms it
    assert _events(client, alpha.token, scope=f"/{beta.org_id}") == []


def test_project_auditor_sees_its_project_and_a_deny_hides_it(world) -> None:  # type: ignore[no-untyped-def]
    client, admin, alpha, _beta = world
    h = {"Authorization": f"Bearer {admin}"}
    project = alpha.get("project_id")
    auditor_id, token = _login_as_new_user(client, admin, "auditor@alpha.example")
    assert _events(client, token) == []  # no binding yet: nothing
    assert client.post(f"/scopes/{project}/bindings", headers=h,
                       json={"principal_id": auditor_id, "role_id": "auditor"}).status_code == 201
    events = _events(client, token)
    assert events and all(f"/{project}" in e["scope_path"] for e in events)

    # an org-level auditor with a deny on that project loses the project and the org level
    assert client.post(f"/scopes/{alpha.org_id}/bindings", headers=h,
                       json={"principal_id": auditor_id, "role_id": "auditor"}).status_code == 201
    assert client.post(f"/scopes/{project}/deny-bindings", headers=h,
                       json={"principal_id": auditor_id,
                             "permission": "audit.events.read"}).status_code == 201
    after = _events(client, token)
    assert all(f"/{project}" not in e["scope_path"] for e in after)
    assert all(e["scope_path"] != f"/{alpha.org_id}" for e in after)


def test_filters_and_bad_input(world) -> None:  # type: ignore[no-untyped-def]
    client, admin, alpha, _beta = world
    created = _events(client, admin, action="iam.project.*")
    assert created and all(e["action"].startswith("iam.project.") for e in created)
    mine = _events(client, admin, actor=alpha.owner_id)
    assert mine and all(e["actor_id"] == alpha.owner_id for e in mine)
    h = {"Authorization": f"Bearer {admin}"}
    naive = client.get("/audit/events", params={"since": "2026-01-01T00:00:00"}, headers=h)
    assert naive.status_code == 422 and "time zone" in naive.json()["detail"]
    client.cookies.clear()  # the logins above left a session cookie in this client
    assert client.get("/audit/events").status_code == 401


def test_export_streams_json_lines_within_scope(world) -> None:  # type: ignore[no-untyped-def]
    client, admin, alpha, beta = world
    resp = client.get("/audit/events/export", headers={"Authorization": f"Bearer {admin}"})
    assert resp.status_code == 200
    assert resp.headers["content-type"].startswith("application/x-ndjson")
    lines = [json.loads(line) for line in resp.text.splitlines()]
    assert [e["seq"] for e in lines] == sorted(e["seq"] for e in lines)
    assert len(lines) == len(_events(client, admin))

    # org owners hold audit.events.export on their org only
    own = client.get("/audit/events/export", headers={"Authorization": f"Bearer {alpha.token}"})
    assert own.status_code == 200
    assert beta.org_id not in own.text
