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
