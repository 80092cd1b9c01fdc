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


# --- ids in request bodies and query strings ------------------------------------------------

SAMPLES: dict[str, object] = {"email": "iso@example.org", "currency": "USD",
                              "permission": "iam.projects.read", "password": "x" * 16,
                              "permissions": ["iam.projects.read"], "type": "instance"}


def _id_like(name: str) -> bool:
    return name == "id" or name.endswith("_id")


def _resolve(schema: dict, components: dict) -> dict:  # type: ignore[type-arg]
    while "$ref" in schema:
        schema = components[schema["$ref"].rsplit("/", 1)[1]]
    for key in ("anyOf", "oneOf"):
        if key in schema:  # Optional[X]: the non-null branch
            branches = [b for b in schema[key] if b.get("type") != "null"]
            return _resolve(branches[0], components) if branches else {"type": "null"}
    return schema


def _sample(name: str, schema: dict, components: dict, path: str,  # type: ignore[type-arg]
            ids: list[str]) -> object:
    """A valid-looking value; id-like fields (at any depth) are recorded in ``ids``."""
    schema = _resolve(schema, components)
    if schema.get("type") == "object" or "properties" in schema:
        out = {}
        for prop, sub in schema.get("properties", {}).items():
            sub_path = f"{path}.{prop}" if path else prop
            if prop in schema.get("required", ()) or _id_like(prop) or (
                    "properties" in _resolve(sub, components)):
                out[prop] = _sample(prop, sub, components, sub_path, ids)
        return out
    if _id_like(name):
        ids.append(path)
        return ""
    if name in SAMPLES:
        return SAMPLES[name]
    if "enum" in schema:
        return schema["enum"][0]
    kind = schema.get("type")
    if kind == "string":
        return "2099-01-01T00:00:00Z" if schema.get("format") == "date-time" else "iso"
    if kind in ("integer", "number"):
        return max(1, schema.get("minimum", 1))
    if kind == "boolean":
        return False
    if kind == "array":
        return []
    return None


def _set(body: dict, dotted: str, value: str) -> dict:  # type: ignore[type-arg]
    import copy

    out = copy.deepcopy(body)
    node = out
    *parents, leaf = dotted.split(".")
    for part in parents:
        node = node[part]
    node[leaf] = value
    return out


def _foreign_values(a: Tenant, field: str) -> list[str]:
    """Tenant A's ids to put in a body field: every kind that field could name."""
    leaf = field.rsplit(".", 1)[-1]
    if field.endswith("resource.id"):
        return [a.get("instance_id"), a.get("project_id"), a.org_id, "platform"]
    if leaf == "principal_id":
        return [a.owner_id, a.get("service_account_id"), a.get("group_id")]
    if leaf == "scope_id":
        return [a.get("project_id"), a.get("department_id"), a.org_id]
    if leaf in ID_FACTORIES:
        return [a.get(leaf)]
    return [a.org_id, a.get("project_id"), a.owner_id, a.get("service_account_id")]


def _own_value(b: Tenant, field: str) -> str:
    leaf = field.rsplit(".", 1)[-1]
    if field.endswith("resource.id"):
        return b.get("instance_id")
    if leaf == "principal_id":
        return b.get("group_id")
    if leaf == "role_id":
        return "project-viewer"
    return b.get(leaf) if leaf in ID_FACTORIES else b.get("project_id")


def test_ids_of_another_tenant_in_bodies_and_queries_are_refused(
    world: tuple[TestClient, Tenant, Tenant],
) -> None:
    """For every route with a JSON body, each id-like field (nested ones too: resource.id,
    principal_id, role_id, scope_id...) is filled in turn with tenant A's ids while the path
    names tenant B's own objects; B's owner calling it must never get a 2xx. Optional id query
    parameters with A's ids must not show B anything of A."""
    client, a, b = world
    spec = client.app.openapi()
    components = spec["components"]["schemas"]
    a_ids = {a.get(n) for n in ID_FACTORIES} - set(b.objects.values()) - {""}
    checked = own_ok = 0
    for path, ops in spec["paths"].items():
        for method, op in ops.items():
            params = PARAM.findall(path)
            url = path.format(**{p: b.get(p) for p in params})
            content = (op.get("requestBody") or {}).get("content", {})
            if "application/json" in content:
                ids: list[str] = []
                body = _sample("", content["application/json"]["schema"], components, "", ids)
                assert isinstance(body, dict)
                own = body
                for field in ids:
                    own = _set(own, field, _own_value(b, field))
                for field in ids:
                    for value in _foreign_values(a, field):
                        attempt = _set(own, field, value)
                        resp = client.request(method.upper(), url, json=attempt,
                                              headers=b.headers)
                        assert not resp.is_success, (method, path, field, value, resp.text)
                        checked += 1
                if ids:  # the same call with B's own ids goes through: the walk is not vacuous
                    resp = client.request(method.upper(), url, json=own, headers=b.headers)
                    own_ok += resp.is_success
            if len(params) >= 2:  # one of A's ids among B's own in the path
                content_schema = content.get("application/json", {}).get("schema")
                mixed_body = (_sample("", content_schema, components, "", [])
                              if content_schema else None)
                for foreign in [p for p in params if _id_like(p)]:  # not keys/periods
                    mixed = path.format(**{p: (a.get(p) if p == foreign else b.get(p))
                                           for p in params})
                    resp = client.request(method.upper(), mixed, json=mixed_body,
                                          headers=b.headers)
                    assert not resp.is_success, (method, path, foreign, resp.text)
                    checked += 1
            if method == "get":
                for q in op.get("parameters", []):
                    if q["in"] != "query" or not _id_like(q["name"]) or q.get("required"):
                        continue
                    for value in _foreign_values(a, q["name"]):
                        resp = client.get(url, params={q["name"]: value}, headers=b.headers)
                        leaked = [i for i in a_ids if i != value and i in resp.text]
                        assert not (resp.is_success and leaked), (path, q["name"], leaked)
                        checked += 1
    # explain: B's own scope, A's principal or resource in the query string.
    base = {"permission": "iam.projects.read", "scope_id": b.get("project_id")}
    for extra in ({"principal_id": a.owner_id}, {"principal_id": a.get("service_account_id")},
                  {"principal_id": b.owner_id, "resource_type": "instance",
                   "resource_id": a.get("instance_id")}):
        resp = client.get("/iam/explain", params={**base, **extra}, headers=b.headers)
        assert resp.status_code == 404, (extra, resp.text)
    ok = client.get("/iam/explain", params={**base, "principal_id": b.owner_id},
                    headers=b.headers)
    assert ok.status_code == 200, ok.text
    assert checked >= 25 and own_ok >= 4, (checked, own_ok)


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
