"""Billing input that looks valid but is not: scope paths naming other tenants' or ghost
scopes, numbers that are not integers, JSON with duplicate keys, replays that change the
payload, and webhooks aimed at internal addresses."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from aicloud.platform import billing
from aicloud.shared.ids import new_id
from tests.api.billing_world import USD, World
from tests.conftest import LiveServer

WINDOW = {"window_start": "2026-01-01T00:00:00Z", "window_end": "2026-01-01T00:01:00Z"}


def _record(w: World, key: str, **kw: Any) -> dict[str, Any]:
    a = w.alpha
    dep, prj = a.get("department_id"), a.get("project_id")
    return {"resource_id": "inst_0", "project_id": prj, "scope_path": f"/{a.org_id}/{dep}/{prj}",
            "meter": "gpu_seconds", "dimension_value": "H100", "quantity": 60,
            "idempotency_key": key, **WINDOW, **kw}


def _usage_count(w: World) -> int:
    with w.ctx.db.engine.connect() as c:
        return int(c.exec_driver_sql("SELECT count(*) FROM billing_usage_records").scalar() or 0)


def _wallet_exists(w: World, org_id: str) -> bool:
    with w.ctx.db.transaction() as s:
        return billing.wallet_balance(s, org_id, "USD").account_id is not None


def test_usage_scope_paths_must_name_existing_correctly_nested_scopes(
        billing_world: World) -> None:
    w, a, b = billing_world, billing_world.alpha, billing_world.beta
    dep, prj = a.get("department_id"), a.get("project_id")
    ghost_org, ghost_prj = new_id("org"), new_id("prj")
    bad_paths = [
        (f"/{b.org_id}/{dep}/{prj}", prj),  # alpha's project under beta: charges beta
        (f"/{b.org_id}/{prj}", prj),
        (f"/{ghost_org}/{prj}", prj),  # an organization that does not exist
        (f"/{ghost_org}/{ghost_prj}", ghost_prj),
        ("/org_ghost/prj_x", "prj_x"),  # not even an id
        (f"/{a.org_id}/{b.get('department_id')}/{prj}", prj),  # beta's department
        (f"/{a.org_id}/{prj}", prj),  # the department left out
    ]
    for i, (path, project) in enumerate(bad_paths):
        resp = w.client.post("/usage", headers=w.h(w.admin), json={"records": [
            _record(w, f"ok-{i}"), _record(w, f"bad-{i}", scope_path=path,
                                           project_id=project)]})
        assert resp.status_code == 422, (path, resp.text)
        assert "scope_path" in resp.text
    assert _usage_count(w) == 0  # all or nothing: the good record was not stored either
    assert not _wallet_exists(w, b.org_id) and not _wallet_exists(w, ghost_org)
    ok = w.client.post("/usage", headers=w.h(w.admin), json={"records": [_record(w, "ok")]})
    assert ok.status_code == 200 and ok.json()["accepted"] == 1, ok.text


def test_a_10000_record_batch_of_one_project_is_accepted(billing_world: World) -> None:
    w = billing_world
    records = [_record(w, f"bulk-{i}", resource_id=f"inst_{i % 50}") for i in range(10_000)]
    resp = w.client.post("/usage", headers=w.h(w.admin), json={"records": records})
    assert resp.status_code == 200 and resp.json()["accepted"] == 10_000, resp.text[:300]


@pytest.mark.parametrize("value", [2.0, "3", True, 1e3, None])
def test_money_and_quantity_fields_take_json_integers_only(billing_world: World,
                                                          value: Any) -> None:
    w, a = billing_world, billing_world.alpha
    org = a.org_id
    prices = {"currency": "USD", "effective_from": "2026-01-01T00:00:00Z"}
    price = {"meter": "gpu_seconds", "unit_price": 1, "per_quantity": 1}
    attempts = [
        ("POST", "/usage", w.admin, {"records": [_record(w, "q", quantity=value)]}),
        ("POST", "/price-lists", w.staff, {**prices, "prices": [{**price, "unit_price": value}]}),
        ("POST", "/price-lists", w.staff,
         {**prices, "prices": [{**price, "per_quantity": value}]}),
        ("POST", f"/orgs/{org}/price-lists", w.staff, {**prices, "discount_bp": value}),
        ("POST", f"/orgs/{org}/top-ups", w.staff,
         {"amount": value, "currency": "USD", "idempotency_key": "t"}),
        ("POST", f"/orgs/{org}/adjustments", w.staff,
         {"amount": value, "currency": "USD", "reason": "r", "idempotency_key": "a"}),
        ("PUT", f"/orgs/{org}/credit-limit", w.staff,
         {"currency": "USD", "credit_limit": value}),
        ("POST", f"/orgs/{org}/holds", w.staff,
         {"amount": value, "currency": "USD", "reason": "r", "idempotency_key": "h"}),
        ("POST", f"/scopes/{org}/budgets", a.token, {"amount": value, "currency": "USD"}),
        ("POST", f"/scopes/{org}/budgets", a.token,
         {"amount": USD, "currency": "USD", "thresholds": [value]}),
    ]
    for method, path, token, body in attempts:
        resp = w.client.request(method, path, json=body, headers=w.h(token))
        assert resp.status_code == 422, (path, body, resp.text)
    assert _usage_count(w) == 0 and not _wallet_exists(w, org)


def test_a_replayed_key_with_any_other_field_is_409(billing_world: World) -> None:
    w, org = billing_world, billing_world.alpha.org_id
    top = {"amount": 5 * USD, "currency": "USD", "reference": "inv-1", "idempotency_key": "t1"}
    first = w.client.post(f"/orgs/{org}/top-ups", json=top, headers=w.h(w.staff))
    assert first.status_code == 201, first.text
    same = w.client.post(f"/orgs/{org}/top-ups", json=top, headers=w.h(w.staff))
    assert same.status_code == 201 and same.json()["id"] == first.json()["id"]
    for change in ({"reference": "inv-2"}, {"reference": None}):
        resp = w.client.post(f"/orgs/{org}/top-ups", json={**top, **change},
                             headers=w.h(w.staff))
        assert resp.status_code == 409, (change, resp.text)
    adj = {"amount": USD, "currency": "USD", "reason": "goodwill", "idempotency_key": "a1"}
    assert w.client.post(f"/orgs/{org}/adjustments", json=adj,
                         headers=w.h(w.staff)).status_code == 201
    other = w.client.post(f"/orgs/{org}/adjustments", json={**adj, "reason": "other"},
                          headers=w.h(w.staff))
    assert other.status_code == 409, other.text
    hold = {"amount": USD, "currency": "USD", "reason": "admission", "cause_id": "i1",
            "idempotency_key": "h1"}
    assert w.client.post(f"/orgs/{org}/holds", json=hold,
                         headers=w.h(w.staff)).status_code == 201
    for change in ({"cause_id": "i2"}, {"reason": "other"}, {"ttl_seconds": 60},
                   {"amount": 2 * USD}):
        resp = w.client.post(f"/orgs/{org}/holds", json={**hold, **change},
                             headers=w.h(w.staff))
        assert resp.status_code == 409, (change, resp.text)
    usage = _record(w, "u1")
    assert w.client.post("/usage", json={"records": [usage]},
                         headers=w.h(w.admin)).status_code == 200
    for change in ({"principal_id": "usr_x"}, {"source": "other"}, {"quantity": 61}):
        resp = w.client.post("/usage", json={"records": [{**usage, **change}]},
                             headers=w.h(w.admin))
        assert resp.status_code == 409, (change, resp.text)
    transfers = w.client.get(f"/orgs/{org}/wallet/transfers", headers=w.h(w.staff)).json()
    # the top-up, the adjustment and u1's charge (usage is rated as it is ingested), once each
    assert sorted(t["reason"] for t in transfers) == ["adjustment", "top_up", "usage"]


def test_json_bodies_with_duplicate_keys_are_refused_at_the_edge(billing_world: World) -> None:
    """Over a real socket: every JSON body goes through one strict parser before any route."""
    w, org = billing_world, billing_world.alpha.org_id
    with LiveServer(w.ctx) as server, httpx.Client(base_url=server.url) as http:
        def post(path: str, raw: bytes, token: str) -> httpx.Response:
            return http.post(path, content=raw, headers={
                "Authorization": f"Bearer {token}", "Content-Type": "application/json"})

        dup_amount = (b'{"amount": 1, "currency": "USD", "idempotency_key": "d1", '
                      b'"amount": 1000000000000}')
        resp = post(f"/orgs/{org}/top-ups", dup_amount, w.staff)
        assert resp.status_code == 422, resp.text
        assert resp.headers["content-type"].startswith("application/problem+json")
        assert "duplicate key 'amount'" in resp.json()["detail"]
        nested = (b'{"records": [{"resource_id": "a", "resource_id": "b"}]}')
        assert post("/usage", nested, w.admin).status_code == 422
        assert post("/orgs", b'{"name": "x", "name": "y"}', w.admin).status_code == 422
        assert post(f"/orgs/{org}/top-ups", b'{"amount": NaN, "currency": "USD", '
                    b'"idempotency_key": "n"}', w.staff).status_code == 422
        assert not _wallet_exists(w, org)
        fine = post(f"/orgs/{org}/top-ups",
                    b'{"amount": 1, "currency": "USD", "idempotency_key": "d1"}', w.staff)
        assert fine.status_code == 201, fine.text


@pytest.mark.parametrize("url", ["http://127.0.0.1:9000/internal-admin",
                                 "http://[::ffff:127.0.0.1]/", "http://2130706433/",
                                 "http://169.254.169.254/latest/meta-data/"])
def test_a_tenant_admin_cannot_aim_a_budget_webhook_inside(billing_world: World,
                                                           url: str) -> None:
    w, a = billing_world, billing_world.alpha
    resp = w.client.post(f"/scopes/{a.org_id}/budgets", headers=w.h(a.token), json={
        "amount": USD, "currency": "USD", "webhook_url": url})
    assert resp.status_code == 422, resp.text
    assert resp.json()["type"].endswith("webhook-target-refused")
    assert w.client.get(f"/scopes/{a.org_id}/budgets", headers=w.h(a.token)).json() == []


def test_cost_report_group_by_takes_known_columns_only(billing_world: World) -> None:
    w, a = billing_world, billing_world.alpha
    for group_by in ("scope_path", "project,project", "project;drop table x", "org_id",
                     "__class__"):
        resp = w.client.get(f"/scopes/{a.org_id}/cost-report", headers=w.h(a.token),
                            params={"group_by": group_by})
        assert resp.status_code == 422, (group_by, resp.text)
    other = w.client.get(f"/scopes/{w.beta.org_id}/cost-report", headers=w.h(a.token))
    assert other.status_code == 404


@pytest.mark.parametrize("period", ["2026-1", " 2026-01", "2026-0_1", "+2026-01", "2026-١٢",
                                    "0000-01", "2026-13", "2026-00", "2026-01-01"])
def test_statement_periods_are_yyyy_mm_exactly(billing_world: World, period: str) -> None:
    w, org = billing_world, billing_world.alpha.org_id
    resp = w.client.get(f"/orgs/{org}/statements/{period}", headers=w.h(w.alpha.token),
                        params={"format": "csv"})
    assert resp.status_code == 422, (period, resp.status_code, resp.text)
    assert w.client.get(f"/orgs/{org}/statements/2026-01",
                        headers=w.h(w.alpha.token)).status_code == 200
