"""Tenant isolation, generated from the route table: tenant B's owner gets 404 for every
route that names one of tenant A's objects, and nothing of A in any listing.

New routes are covered automatically; one with an id parameter that tests/isolation.py has
no factory for fails here until a factory is registered.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from fastapi.routing import APIRoute, iter_route_contexts
from fastapi.testclient import TestClient

from aicloud.api import create_app
from aicloud.api.authz import route_access
from aicloud.runtime import AppContext
from tests.isolation import ID_FACTORIES, QUERY_VALUES, Tenant, admin_client, make_tenant

PARAM = re.compile(r"{(\w+)}")


def routes(app):  # type: ignore[no-untyped-def]
    for context in iter_route_contexts(app.routes):
        if isinstance(context.original_route, APIRoute):
            for method in sorted(context.methods or ()):
                yield method, context.path, context


@pytest.fixture
def world(ctx: AppContext) -> Iterator[tuple[TestClient, Tenant, Tenant]]:
    with admin_client(ctx) as (client, admin):
        yield client, make_tenant(client, admin, "alpha"), make_tenant(client, admin, "beta")


def _required_query(context) -> dict[str, str]:  # type: ignore[no-untyped-def]
    return {p.name: "" for p in context.dependant.query_params if p.field_info.is_required()}


def test_every_id_route_answers_404_to_another_tenant(
    world: tuple[TestClient, Tenant, Tenant],
) -> None:
    client, a, b = world
    missing: set[str] = set()
    checked = 0
    table = list(routes(client.app))
    # Reads first, then writes: a write that wrongly succeeded must not hide a read leak.
    table.sort(key=lambda r: r[0] != "GET")
    for method, path, context in table:
        params = PARAM.findall(path)
        query = _required_query(context)
        id_query = [q for q in query if q.endswith("_id")]
        if not params and not id_query:
            continue
        values: dict[str, str] = {}
        for name in params + id_query:
            if name not in ID_FACTORIES:
                missing.add(name)
                continue
            values[name] = a.get(name)
        if missing:
            continue
        url = path.format(**{p: values[p] for p in params})
        qs = {q: values.get(q) or QUERY_VALUES.get(q, "") for q in query}
        body = {} if method in ("POST", "PUT", "PATCH") else None
        resp = client.request(method, url, params=qs, json=body, headers=b.headers)
        assert resp.status_code == 404, (method, path, route_access(context).describe(),
                                         resp.status_code, resp.text)
        for value in values.values():
            assert value not in resp.text.replace(url, ""), (method, path, resp.text)
        if method == "GET":  # the owner does see it: the id was real
            own = client.get(url, params=qs, headers=a.headers)
            assert own.status_code == 200, (path, own.status_code, own.text)
        checked += 1
    assert not missing, (
        f"no tenant-isolation id factory for {sorted(missing)}: register one with "
        "@id_factory(...) in tests/isolation.py")
    assert checked >= 25


def test_listings_show_nothing_of_another_tenant(
    world: tuple[TestClient, Tenant, Tenant],
) -> None:
    client, a, b = world
    for name in ID_FACTORIES:
        a.get(name)
        b.get(name)
    # A value both tenants hold (a quota key like gpu:H100) identifies nobody.
    a_ids = set(a.objects.values()) - set(b.objects.values()) - {""}
    listed = 0
    for method, path, context in routes(client.app):
        if method != "GET" or PARAM.search(path) or _required_query(context):
            continue
        resp = client.get(path, headers=b.headers)
        if resp.status_code != 200 or "json" not in resp.headers.get("content-type", ""):
            continue
        leaked = [i for i in a_ids if i in resp.text]
        assert not leaked, (path, leaked)
        listed += 1
    # The same listings do show B its own objects (so the filter is not just "empty").
    assert b.org_id in client.get("/orgs", headers=b.headers).text
    assert b.get("project_id") in client.get("/projects", headers=b.headers).text
    assert b.get("service_account_id") in client.get("/service-accounts",
                                                     headers=b.headers).text
    assert listed >= 8


def test_an_id_route_without_a_factory_fails_the_walk(ctx: AppContext) -> None:
    from fastapi import APIRouter

    from aicloud.api.authz import Authorize, path_param

    router = APIRouter()

    @router.get("/widgets/{widget_id}")
    def get_widget(widget_id: str,
                   caller=Authorize("iam.projects.read", scope=path_param("widget_id")),  # type: ignore[no-untyped-def]
                   ) -> None:
        return None

    app = create_app(ctx)
    app.include_router(router)
    params = {p for _, path, _ in routes(app) for p in PARAM.findall(path)}
    assert "widget_id" in params and "widget_id" not in ID_FACTORIES
