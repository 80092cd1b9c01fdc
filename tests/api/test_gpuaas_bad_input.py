"""Launch requests that can never be right are refused at once with a clear problem."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from aicloud.runtime import AppContext
from tests.isolation import Tenant, admin_client, make_tenant


@pytest.fixture
def alpha(sqlite_ctx: AppContext) -> Iterator[Tenant]:
    with admin_client(sqlite_ctx) as (client, admin):
        tenant = make_tenant(client, admin, "alpha")
        tenant.get("node_id")
        yield tenant


@pytest.mark.parametrize(("body", "needle"), [
    ({"name": "x", "instance_type": "gpu.h100.1x", "gpu_count": 0}, "gpu_count"),
    ({"name": "x", "instance_type": "gpu.h100.1x", "gpu_count": -2}, "gpu_count"),
    ({"name": "x", "instance_type": "gpu.nope.1x"}, "gpu.nope.1x"),
    ({"name": "x", "instance_type": "gpu.h100.1x", "template": "vm"}, "template"),
    ({"name": "", "instance_type": "gpu.h100.1x"}, "name"),
    ({"name": "x", "instance_type": "gpu.h100.1x", "priority": 1000}, "priority"),
])
def test_bad_launches_are_422_and_create_nothing(alpha: Tenant, body: dict, needle: str) -> None:
    project = alpha.get("project_id")
    resp = alpha.client.post(f"/projects/{project}/instances", json=body, headers=alpha.headers)
    assert resp.status_code == 422, resp.text
    assert needle in resp.text
    listed = alpha.client.get(f"/projects/{project}/instances", headers=alpha.headers).json()
    assert listed["items"] == []


def test_another_tenants_ids_in_the_body_or_the_query_reach_nothing(
        sqlite_ctx: AppContext) -> None:
    """A launch body naming another tenant's project is refused (no field may say where it
    goes but the path); a list cursor carrying another tenant's instance id pages only the
    caller's own project; stop with the other's id is 404 and leaves it running."""
    from aicloud.shared.pagination import encode_cursor

    with admin_client(sqlite_ctx) as (_client, admin):
        a = make_tenant(_client, admin, "alpha")
        b = make_tenant(_client, admin, "beta")
        theirs = b.get("instance_id")
        mine = a.get("instance_id")
        resp = a.client.post(f"/projects/{a.get('project_id')}/instances", headers=a.headers,
                             json={"name": "x", "instance_type": "gpu.h100.1x",
                                   "project_id": b.get("project_id")})
        assert resp.status_code == 422 and "project_id" in resp.text
        for cursor in (encode_cursor(theirs), encode_cursor("")):
            listed = a.client.get(f"/projects/{a.get('project_id')}/instances",
                                  params={"cursor": cursor}, headers=a.headers).json()
            assert {i["id"] for i in listed["items"]} <= {mine}
        assert a.client.post(f"/instances/{theirs}/stop", headers=a.headers).status_code == 404
        assert b.client.get(f"/instances/{theirs}", headers=b.headers).json()["state"] not in (
            "stopped", "stopping")
