"""Nodes join over the API: join tokens (platform operators only, shown once, hashed, N uses,
expiry, audited), the node credential (hashed, rotatable, revocable), and clear problems for
every bad input."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select, update

from aicloud.platform.audit.models import AuditEventModel
from aicloud.products.gpuaas.models import NodeCredentialModel, NodeJoinTokenModel
from aicloud.runtime import AppContext
from aicloud.shared import security
from tests.isolation import Tenant, admin_client, make_tenant


def _inventory(name: str, gpus: int = 2) -> dict[str, Any]:
    return {"name": name, "inventory_source": "static", "simulated": True,
            "labels": {"simulated": "true"},
            "gpus": [{"index": i, "model": "H100", "name": "H100 (simulated)",
                      "memory_gib": 80} for i in range(gpus)]}


@pytest.fixture
def api(ctx: AppContext) -> Iterator[tuple[TestClient, dict[str, str], AppContext]]:
    with admin_client(ctx) as (client, token):
        yield client, {"Authorization": f"Bearer {token}"}, ctx


def _token(client: TestClient, admin: dict[str, str], **body: Any) -> dict[str, Any]:
    resp = client.post("/nodes/join-tokens", json=body, headers=admin)
    assert resp.status_code == 201, resp.text
    return resp.json()  # type: ignore[no-any-return]


def _join(client: TestClient, token: str, name: str) -> Any:
    return client.post("/agent/v1/join", json={"token": token, "node": _inventory(name)})


def _nodes(client: TestClient, admin: dict[str, str]) -> dict[str, dict[str, Any]]:
    return {n["name"]: n for n in client.get("/nodes", headers=admin).json()}


def test_a_join_token_is_shown_once_stored_hashed_and_audited(api: Any) -> None:
    client, admin, ctx = api
    made = _token(client, admin, expires_in_seconds=3600, uses=2, description="rack 4")
    secret = made["token"]
    assert secret.startswith("aicnj_") and made["uses"] == 0 and made["max_uses"] == 2
    listed = client.get("/nodes/join-tokens", headers=admin)
    assert listed.status_code == 200 and secret not in listed.text
    assert [t["id"] for t in listed.json()] == [made["id"]]
    with ctx.db.transaction() as s:
        row = s.get(NodeJoinTokenModel, made["id"])
        assert row.digest == security.token_digest(secret) and secret not in row.digest
        actions = set(s.scalars(select(AuditEventModel.action).where(
            AuditEventModel.target_id == made["id"])))
    assert actions == {"gpuaas.node_join_token.create"}


def test_joining_spends_a_use_and_gives_a_hashed_credential(api: Any) -> None:
    client, admin, ctx = api
    secret = _token(client, admin, uses=1)["token"]
    resp = _join(client, secret, "gpu-a")
    assert resp.status_code == 201, resp.text
    joined = resp.json()
    assert joined["credential"].startswith("aicnc_") and joined["node_name"] == "gpu-a"
    node = _nodes(client, admin)["gpu-a"]
    assert node["id"] == joined["node_id"] and node["state"] == "ready"
    assert len(node["gpus"]) == 2
    with ctx.db.transaction() as s:
        cred = s.get(NodeCredentialModel, joined["credential_id"])
        assert cred.digest == security.token_digest(joined["credential"])
        assert s.scalar(select(AuditEventModel.action).where(
            AuditEventModel.action == "gpuaas.node.join",
            AuditEventModel.target_id == joined["node_id"])) is not None
    # Single use: a second host is refused, and the answer does not say why in particular.
    again = _join(client, secret, "gpu-b")
    assert again.status_code == 401 and "join token" in again.json()["detail"]
    assert "gpu-b" not in _nodes(client, admin)


def test_expired_revoked_and_unknown_tokens_are_refused_alike(api: Any) -> None:
    client, admin, ctx = api
    expired = _token(client, admin)
    revoked = _token(client, admin)
    with ctx.db.transaction() as s:
        s.execute(update(NodeJoinTokenModel).where(NodeJoinTokenModel.id == expired["id"])
                  .values(expires_at=ctx.clock.now() - timedelta(seconds=1)))
    resp = client.post(f"/nodes/join-tokens/{revoked['id']}/revoke", headers=admin)
    assert resp.status_code == 200 and resp.json()["revoked_at"] is not None
    details = set()
    for secret in (expired["token"], revoked["token"], "aicnj_" + "x" * 43, "garbage"):
        resp = _join(client, secret, "gpu-x")
        assert resp.status_code == 401, resp.text
        details.add(resp.json()["detail"])
    assert len(details) == 1  # nothing tells which tokens exist
    assert "gpu-x" not in _nodes(client, admin)


def test_a_token_cannot_take_over_a_node_that_holds_a_credential(api: Any) -> None:
    client, admin, _ctx = api
    secret = _token(client, admin, uses=3)["token"]
    assert _join(client, secret, "gpu-a").status_code == 201
    resp = _join(client, secret, "gpu-a")
    assert resp.status_code == 409 and "revoke" in resp.json()["detail"]


def test_rotation_retires_the_old_credential_at_once(api: Any) -> None:
    client, admin, _ctx = api
    joined = _join(client, _token(client, admin)["token"], "gpu-a").json()
    old = {"Authorization": f"Bearer {joined['credential']}"}
    resp = client.post("/agent/v1/credential/rotate", headers=old)
    assert resp.status_code == 200, resp.text
    new = resp.json()
    assert new["node_id"] == joined["node_id"] and new["credential"] != joined["credential"]
    assert client.post("/agent/v1/credential/rotate", headers=old).status_code == 401
    assert client.post("/agent/v1/credential/rotate", headers={
        "Authorization": f"Bearer {new['credential']}"}).status_code == 200


def test_revoking_cordons_the_node_refuses_the_credential_until_it_joins_again(
        api: Any) -> None:
    client, admin, _ctx = api
    joined = _join(client, _token(client, admin)["token"], "gpu-a").json()
    node_id = joined["node_id"]
    resp = client.post(f"/nodes/{node_id}/revoke", json={"reason": "disk stolen"},
                       headers=admin)
    assert resp.status_code == 200, resp.text
    assert resp.json()["state"] == "cordoned"
    refused = client.post("/agent/v1/credential/rotate",
                          headers={"Authorization": f"Bearer {joined['credential']}"})
    assert refused.status_code == 401 and "revoked (disk stolen)" in refused.json()["detail"]
    # An operator cannot make it schedulable again behind the revocation.
    assert client.post(f"/nodes/{node_id}/uncordon", headers=admin).status_code == 409
    # A new token re-admits the same node (same id), ready again.
    back = _join(client, _token(client, admin)["token"], "gpu-a")
    assert back.status_code == 201 and back.json()["node_id"] == node_id
    assert _nodes(client, admin)["gpu-a"]["state"] == "ready"


@pytest.mark.parametrize(("body", "needle"), [
    ({"expires_in_seconds": 10}, "expires_in_seconds"),
    ({"expires_in_seconds": 31 * 86400}, "expires_in_seconds"),
    ({"uses": 0}, "uses"),
    ({"uses": 1001}, "uses"),
    ({"uses": "many"}, "uses"),
    ({"node_id": "node_x"}, "node_id"),
    ({"description": "x" * 257}, "description"),
])
def test_bad_join_token_requests_are_422(api: Any, body: dict[str, Any], needle: str) -> None:
    client, admin, _ctx = api
    resp = client.post("/nodes/join-tokens", json=body, headers=admin)
    assert resp.status_code == 422 and needle in resp.text, resp.text
    assert client.get("/nodes/join-tokens", headers=admin).json() == []


@pytest.mark.parametrize(("node", "needle"), [
    ({"name": "../etc", "inventory_source": "static", "simulated": True}, "name"),
    ({"name": "", "inventory_source": "static", "simulated": True}, "name"),
    ({"name": "a", "inventory_source": "static"}, "simulated"),
    ({"name": "a", "inventory_source": "static", "simulated": True, "admin": True}, "admin"),
    ({"name": "a", "inventory_source": "static", "simulated": True,
      "gpus": [{"index": -1, "model": "H100", "name": "x", "memory_gib": 80}]}, "index"),
])
def test_bad_join_bodies_are_422_and_spend_no_use(api: Any, node: dict[str, Any],
                                                  needle: str) -> None:
    client, admin, _ctx = api
    made = _token(client, admin)
    resp = client.post("/agent/v1/join", json={"token": made["token"], "node": node})
    assert resp.status_code == 422 and needle in resp.text, resp.text
    assert client.get("/nodes/join-tokens", headers=admin).json()[0]["uses"] == 0


def test_tenants_cannot_make_join_tokens_or_revoke_nodes(sqlite_ctx: AppContext) -> None:
    with admin_client(sqlite_ctx) as (client, admin_token):
        tenant: Tenant = make_tenant(client, admin_token, "alpha")
        admin = {"Authorization": f"Bearer {admin_token}"}
        made = _token(client, admin)
        node_id = _join(client, made["token"], "gpu-a").json()["node_id"]
        # Platform routes say the permission is missing (like GET /nodes); id routes hide
        # the object.
        for method, path, status in (
                ("POST", "/nodes/join-tokens", 403), ("GET", "/nodes/join-tokens", 403),
                ("POST", f"/nodes/join-tokens/{made['id']}/revoke", 404),
                ("POST", f"/nodes/{node_id}/revoke", 404)):
            resp = client.request(method, path, json={} if method == "POST" else None,
                                  headers=tenant.headers)
            assert resp.status_code == status, (path, resp.status_code, resp.text)
        assert client.get("/nodes/join-tokens", headers=admin).json()[0]["revoked_at"] is None
        client.cookies.clear()  # the logins' session cookies
        anonymous = client.post("/nodes/join-tokens", json={})
        assert anonymous.status_code == 401
        # A custom role cannot carry the permission either (platform-only).
        resp = client.post(f"/orgs/{tenant.org_id}/roles", headers=tenant.headers,
                           json={"name": "joiner", "permissions": ["gpuaas.nodes.join"]})
        assert resp.status_code in (403, 422) and "platform-only" in resp.text, resp.text
        assert _nodes(client, admin)["gpu-a"]["state"] == "ready"
