"""Tenant isolation fixtures, shared by every domain's routes.

``tests/api/test_tenant_isolation.py`` walks the app's route table. For each route with an
id parameter it fills every parameter with an object of tenant A and calls the route as
tenant B's owner, expecting 404; list routes must return nothing of A. A route whose
parameter has no factory here FAILS that test, so a new route is covered the day it lands.

To cover a new id parameter, register a factory that creates (once) an object of the tenant
through the API and returns its id::

    from tests.isolation import Tenant, id_factory

    @id_factory("instance_id")
    def _instance(t: Tenant) -> str:
        return t.post(f"/projects/{t.get('project_id')}/instances", {...})["id"]

Put it in this module (or a module this one imports) so the walker sees it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from fastapi.testclient import TestClient

if TYPE_CHECKING:
    from aicloud.runtime import AppContext

ADMIN_EMAIL = "root@example.org"
ADMIN_PASSWORD = "correct horse battery staple"


@contextmanager
def admin_client(ctx: AppContext) -> Iterator[tuple[TestClient, str]]:
    """A client of a fresh app on ``ctx`` and the token of a platform admin."""
    from aicloud.api import create_app
    from aicloud.platform import iam

    with ctx.db.transaction() as s:
        iam.bootstrap_admin(s, email=ADMIN_EMAIL, password=ADMIN_PASSWORD)
    with TestClient(create_app(ctx), raise_server_exceptions=False) as client:
        resp = client.post("/auth/login", json={"email": ADMIN_EMAIL,
                                                "password": ADMIN_PASSWORD})
        assert resp.status_code == 200, resp.text
        yield client, resp.json()["token"]

IdFactory = Callable[["Tenant"], str]
ID_FACTORIES: dict[str, IdFactory] = {}
# Required non-id query parameters: a valid value so only authorization can refuse.
QUERY_VALUES: dict[str, str] = {"permission": "iam.projects.read"}


def id_factory(param: str) -> Callable[[IdFactory], IdFactory]:
    def register(fn: IdFactory) -> IdFactory:
        ID_FACTORIES[param] = fn
        return fn
    return register


@dataclass
class Tenant:
    """An organization with an org-owner; ``get(param)`` makes one object per id parameter."""

    name: str
    client: TestClient
    token: str
    org_id: str
    owner_id: str
    objects: dict[str, str] = field(default_factory=dict)

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    def post(self, path: str, body: dict[str, Any] | None = None) -> Any:
        resp = self.client.post(path, json=body or {}, headers=self.headers)
        assert resp.status_code in (200, 201), (path, resp.status_code, resp.text)
        return resp.json()

    def get(self, param: str) -> str:
        if param not in self.objects:
            factory = ID_FACTORIES.get(param)
            if factory is None:
                raise LookupError(param)
            self.objects[param] = factory(self)
        return self.objects[param]


def make_user(client: TestClient, admin_token: str, email: str, scope: str,
              role: str) -> tuple[str, str]:
    """A user bound to ``role`` at ``scope`` by a platform admin: (user id, session token)."""
    admin = {"Authorization": f"Bearer {admin_token}"}
    user = client.post("/users", json={"email": email, "password": ADMIN_PASSWORD},
                       headers=admin).json()
    resp = client.post(f"/scopes/{scope}/bindings", headers=admin,
                       json={"principal_id": user["id"], "role_id": role})
    assert resp.status_code == 201, resp.text
    token = client.post("/auth/login", json={"email": email,
                                             "password": ADMIN_PASSWORD}).json()["token"]
    return user["id"], token


def user_token(client: TestClient, admin_token: str, email: str, scope: str,
               role: str) -> str:
    """The session token of a new user bound to ``role`` at ``scope``."""
    return make_user(client, admin_token, email, scope, role)[1]


def make_tenant(client: TestClient, admin_token: str, name: str) -> Tenant:
    """An organization and its owner, created through the API by a platform admin."""
    org = client.post("/orgs", json={"name": name},
                      headers={"Authorization": f"Bearer {admin_token}"}).json()
    owner_id, token = make_user(client, admin_token, f"owner@{name}.example", org["id"],
                                "org-owner")
    return Tenant(name=name, client=client, token=token, org_id=org["id"], owner_id=owner_id)


# --- IAM's id parameters ---------------------------------------------------------------------


@id_factory("org_id")
def _org(t: Tenant) -> str:
    return t.org_id


@id_factory("user_id")
def _user(t: Tenant) -> str:
    return t.owner_id


@id_factory("department_id")
def _department(t: Tenant) -> str:
    return t.post(f"/orgs/{t.org_id}/departments", {"name": "research"})["id"]


@id_factory("project_id")
def _project(t: Tenant) -> str:
    return t.post(f"/departments/{t.get('department_id')}/projects", {"name": "llm"})["id"]


@id_factory("scope_id")
def _scope(t: Tenant) -> str:
    return t.get("project_id")


@id_factory("group_id")
def _group(t: Tenant) -> str:
    return t.post(f"/orgs/{t.org_id}/groups", {"name": "ml"})["id"]


@id_factory("service_account_id")
def _service_account(t: Tenant) -> str:
    return t.post(f"/projects/{t.get('project_id')}/service-accounts", {"name": "ci"})["id"]


@id_factory("api_key_id")
def _api_key(t: Tenant) -> str:
    return t.post(f"/service-accounts/{t.get('service_account_id')}/api-keys",
                  {"name": "deploy"})["id"]


@id_factory("role_id")
def _role(t: Tenant) -> str:
    return t.post(f"/orgs/{t.org_id}/roles", {"name": "gpu-user",
                                              "permissions": ["gpuaas.instances.*"]})["id"]


@id_factory("binding_id")
def _binding(t: Tenant) -> str:
    return t.post(f"/scopes/{t.get('project_id')}/bindings",
                  {"principal_id": t.get("group_id"), "role_id": t.get("role_id")})["id"]


@id_factory("deny_binding_id")
def _deny(t: Tenant) -> str:
    return t.post(f"/scopes/{t.get('project_id')}/deny-bindings",
                  {"principal_id": t.get("group_id"),
                   "permission": "gpuaas.instances.delete"})["id"]


@id_factory("invitation_id")
def _invitation(t: Tenant) -> str:
    return t.post(f"/scopes/{t.get('project_id')}/invitations",
                  {"email": f"new@{t.name}.example", "role_id": "project-member"})["id"]


@id_factory("principal_id")
def _principal(t: Tenant) -> str:
    return t.owner_id


# --- GPUaaS's id parameters --------------------------------------------------------------------


def _gpu_node(t: Tenant) -> str:
    """A node with 8 simulated H100s, registered as its agent would (nodes are platform
    resources: no tenant creates them)."""
    from aicloud.platform import audit
    from aicloud.products import gpuaas

    report = gpuaas.NodeReport(name="isolation-node", inventory_source="static",
                               simulated=True, gpus=tuple(gpuaas.GpuReport(
                                   i, "H100", "H100 (simulated)", 80) for i in range(8)))
    ctx = t.client.app.state.context  # type: ignore[attr-defined]
    with ctx.db.transaction() as session:
        return gpuaas.register_node(session, report, actor=audit.Actor.system("test"),
                                    now=ctx.clock.now()).id


@id_factory("node_id")
def _node(t: Tenant) -> str:
    return _gpu_node(t)


@id_factory("token_id")
def _join_token(t: Tenant) -> str:
    """A node join token (platform operators make them; no tenant can)."""
    from datetime import timedelta

    from aicloud.platform import audit
    from aicloud.products import gpuaas

    ctx = t.client.app.state.context  # type: ignore[attr-defined]
    with ctx.db.transaction() as session:
        return gpuaas.create_join_token(session, expires_in=timedelta(hours=1), max_uses=1,
                                        description="isolation", now=ctx.clock.now(),
                                        actor=audit.Actor.system("test")).id


@id_factory("instance_id")
def _instance(t: Tenant) -> str:
    from aicloud.platform import audit, billing

    _gpu_node(t)
    ctx = t.client.app.state.context  # type: ignore[attr-defined]
    with ctx.db.transaction() as session:  # tenants cannot top up: fund as staff would
        billing.top_up(session, actor=audit.Actor.system("test"), org_id=t.org_id,
                       amount=10_000_000, currency="USD", idempotency_key=f"iso-{t.org_id}")
    return t.post(f"/projects/{t.get('project_id')}/instances",
                  {"name": "iso", "instance_type": "gpu.h100.1x"})["id"]


# --- access's parameters ------------------------------------------------------------------------


@id_factory("endpoint_id")
def _endpoint(t: Tenant) -> str:
    t.get("instance_id")  # a node, and a funded wallet
    api = t.post(f"/projects/{t.get('project_id')}/instances",
                 {"name": "api", "instance_type": "gpu.h100.1x", "template": "api-app"})
    return t.post(f"/projects/{t.get('project_id')}/endpoints",
                  {"name": f"iso-{t.name}", "resource_id": api["id"]})["id"]


@id_factory("endpoint_key_id")
def _endpoint_key(t: Tenant) -> str:
    return t.post(f"/api-endpoints/{t.get('endpoint_id')}/keys", {"name": "iso"})["id"]


# --- policy's parameters -------------------------------------------------------------------------


@id_factory("resource_key")
def _quota_key(t: Tenant) -> str:
    """A quota the tenant's owner sets on its project (the owner administers the org above)."""
    resp = t.client.put(f"/scopes/{t.get('project_id')}/quotas/gpu:H100", json={"limit": 4},
                        headers={"Authorization": f"Bearer {t.token}"})
    assert resp.status_code == 200, resp.text
    return "gpu:H100"
@id_factory("instance_type")
def _idle_policy(t: Tenant) -> str:
    """An idle policy for every type that the tenant's owner sets on its project."""
    resp = t.client.put(f"/scopes/{t.get('project_id')}/idle-policies/*",
                        json={"threshold_pct": 5, "idle_minutes": 30},
                        headers={"Authorization": f"Bearer {t.token}"})
    assert resp.status_code == 200, resp.text
    return "*"


# --- billing's parameters --------------------------------------------------------------------


@id_factory("budget_id")
def _budget(t: Tenant) -> str:
    return t.post(f"/scopes/{t.get('project_id')}/budgets",
                  {"amount": 100_000_000, "currency": "USD"})["id"]


@id_factory("period")
def _period(t: Tenant) -> str:
    # Not an id: any month (one no timestamp contains, for the listing leak check); the org
    # in the same path is what isolation is about.
    return "1999-12"


@id_factory("hold_id")
def _hold(t: Tenant) -> str:
    """A hold on the tenant's wallet. Tenants cannot make holds (a platform-scope permission):
    fund and reserve as billing staff or a product would."""
    from aicloud.platform import audit, billing

    ctx = t.client.app.state.context  # type: ignore[attr-defined]
    actor = audit.Actor.system("test")
    with ctx.db.transaction() as session:
        billing.top_up(session, actor=actor, org_id=t.org_id, amount=5_000_000,
                       currency="USD", idempotency_key=f"iso-hold-{t.org_id}")
        return billing.create_org_hold(session, actor=actor, org_id=t.org_id,
                                       amount=1_000_000, currency="USD",
                                       idempotency_key=f"iso-{t.org_id}", reason="test").id
