"""The world the billing route tests share: two tenants, platform billing staff, a project
member, and a TestClient, all made through the API."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from fastapi.testclient import TestClient

from aicloud.platform import billing
from aicloud.runtime import AppContext
from tests.isolation import Tenant, admin_client, make_tenant, user_token

USD = 1_000_000


@dataclass
class World:
    client: TestClient
    ctx: AppContext
    admin: str  # platform admin: may ingest usage
    staff: str  # billing-admin bound at the platform: top-ups, prices
    alpha: Tenant
    beta: Tenant
    member: str  # project-member of alpha's project

    def h(self, token: str, key: str | None = None) -> dict[str, str]:
        headers = {"Authorization": f"Bearer {token}"}
        if key is not None:
            headers["Idempotency-Key"] = key
        return headers

    def holds(self, org: str) -> str:
        return f"/orgs/{org}/holds"


@pytest.fixture
def billing_world(ctx: AppContext) -> Iterator[World]:
    with ctx.db.transaction() as s:
        billing.register_default_meters(s)
    with admin_client(ctx) as (client, admin):
        alpha, beta = make_tenant(client, admin, "alpha"), make_tenant(client, admin, "beta")
        staff = user_token(client, admin, "staff@example.org", "platform", "billing-admin")
        member = user_token(client, admin, "member@alpha.example", alpha.get("project_id"),
                            "project-member")
        yield World(client, ctx, admin, staff, alpha, beta, member)
