"""Quotas over the API: who may set them, and that admission enforces them."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from aicloud.runtime import AppContext
from tests.isolation import Tenant, admin_client, make_tenant


@pytest.fixture
def world(ctx: AppContext) -> Iterator[tuple[TestClient, str, Tenant]]:
    with admin_client(ctx) as (client, admin):
        yield client, admin, make_tenant(client, admin, "alpha")


def _h(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_owner_sub_allocates_but_cannot_raise_its_own_org(world) -> None:  # type: ignore[no-untyped-def]
    client, admin, alpha = world
    project = alpha.get("project_id")
    ok = client.put(f"/scopes/{project}/quotas/gpu:H100", json={"limit": 2},
                    headers=_h(alpha.token))
    assert ok.status_code == 200 and ok.json()["limit"] == 2
    own = client.put(f"/scopes/{alpha.org_id}/quotas/gpu", json={"limit": 100},
                     headers=_h(alpha.token))
    assert own.status_code == 403
    staff = client.put(f"/scopes/{alpha.org_id}/quotas/gpu", json={"limit": 16},
                       headers=_h(admin))
    assert staff.status_code == 200
    listed = client.get(f"/scopes/{project}/quotas", headers=_h(alpha.token)).json()
    assert {(q["scope_id"], q["resource_key"], q["limit"]) for q in listed} == {
        (alpha.org_id, "gpu", 16), (project, "gpu:H100", 2)}
    assert client.delete(f"/scopes/{project}/quotas/gpu:H100",
                         headers=_h(alpha.token)).status_code == 204
    assert client.delete(f"/scopes/{project}/quotas/gpu:H100",
                         headers=_h(alpha.token)).status_code == 404


def test_bad_quota_input_is_422(world) -> None:  # type: ignore[no-untyped-def]
    client, _admin, alpha = world
    project = alpha.get("project_id")
    for key, body in (("gpu:H100", {"limit": -1}), ("GPU!", {"limit": 1}),
                      ("gpu", {"limit": "many"})):
        resp = client.put(f"/scopes/{project}/quotas/{key}", json=body, headers=_h(alpha.token))
        assert resp.status_code == 422, (key, body, resp.text)
    assert client.get(f"/scopes/{project}/quotas", headers=_h(alpha.token)).json() == []


def test_admission_names_the_quota_it_would_exceed(world) -> None:  # type: ignore[no-untyped-def]
    client, _admin, alpha = world
    alpha.get("instance_id")  # a node, a funded wallet and one running-or-queued H100
    project = alpha.get("project_id")
    assert client.put(f"/scopes/{project}/quotas/gpu:H100", json={"limit": 1},
                      headers=_h(alpha.token)).status_code == 200
    resp = client.post(f"/projects/{project}/instances", headers=_h(alpha.token),
                       json={"name": "second", "instance_type": "gpu.h100.1x"})
    assert resp.status_code == 409, resp.text
    body = resp.json()
    assert body["type"].endswith("quota-exceeded")
    assert "limit 1" in body["detail"] and "exceeds by 1" in body["detail"]
