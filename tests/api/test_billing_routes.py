"""Billing over HTTP: who may move money, what bad input gets, and that statements, cost
reports and alerts read back what the ledger holds."""

from __future__ import annotations

import csv
import io
from datetime import timedelta

import pytest

from aicloud.platform import billing
from aicloud.shared.clock import utcnow
from tests.api.billing_world import USD, World


def _transfers(w: World, org_id: str) -> list[dict]:
    resp = w.client.get(f"/orgs/{org_id}/wallet/transfers", headers=w.h(w.admin))
    assert resp.status_code == 200, resp.text
    return resp.json()


def test_billing_staff_top_up_is_idempotent(billing_world: World) -> None:
    w, org = billing_world, billing_world.alpha.org_id
    body = {"amount": 50 * USD, "currency": "USD", "reference": "inv-1"}
    first = w.client.post(f"/orgs/{org}/top-ups", json=body,
                          headers={**w.h(w.staff), "Idempotency-Key": "pay-1"})
    assert first.status_code == 201, first.text
    again = w.client.post(f"/orgs/{org}/top-ups", json={**body, "idempotency_key": "pay-1"},
                          headers=w.h(w.staff))
    assert again.status_code == 201 and again.json()["id"] == first.json()["id"]
    other = w.client.post(f"/orgs/{org}/top-ups", json={**body, "amount": 51 * USD},
                          headers={**w.h(w.staff), "Idempotency-Key": "pay-1"})
    assert other.status_code == 409, other.text
    wallet = w.client.get(f"/orgs/{org}/wallet", headers=w.h(w.alpha.token)).json()
    assert wallet["posted"] == wallet["available"] == 50 * USD
    assert len(_transfers(w, org)) == 1


@pytest.mark.parametrize("body, headers", [
    ({"amount": 0, "currency": "USD"}, {"Idempotency-Key": "k1"}),
    ({"amount": -5, "currency": "USD"}, {"Idempotency-Key": "k2"}),
    ({"amount": 1.5, "currency": "USD"}, {"Idempotency-Key": "k3"}),
    ({"amount": 10**30, "currency": "USD"}, {"Idempotency-Key": "k4"}),
    ({"amount": 5, "currency": "XYZ"}, {"Idempotency-Key": "k5"}),
    ({"amount": 5, "currency": "USD"}, {}),
    ({"amount": 5, "currency": "USD", "idempotency_key": "a"}, {"Idempotency-Key": "b"}),
])
def test_bad_top_ups_are_422_and_write_nothing(billing_world: World, body: dict,
                                                headers: dict) -> None:
    w, org = billing_world, billing_world.alpha.org_id
    resp = w.client.post(f"/orgs/{org}/top-ups", json=body, headers={**w.h(w.staff), **headers})
    assert resp.status_code == 422, resp.text
    assert resp.headers["content-type"].startswith("application/problem+json")
    assert _transfers(w, org) == []
    audit = w.client.get("/audit/events", params={"action": "billing.top_up"},
                         headers=w.h(w.admin))
    assert audit.status_code == 200 and audit.json()["items"] == []


def test_tenants_cannot_mint_credit(billing_world: World) -> None:
    w, org = billing_world, billing_world.alpha.org_id
    body = {"amount": USD, "currency": "USD", "idempotency_key": "x", "reason": "gift"}
    # the org owner holds billing.* on its org, but money moves only by platform staff
    for path in ("top-ups", "adjustments"):
        resp = w.client.post(f"/orgs/{org}/{path}", json=body, headers=w.h(w.alpha.token))
        assert resp.status_code == 403, resp.text
    limit = w.client.put(f"/orgs/{org}/credit-limit", json={"currency": "USD",
                                                            "credit_limit": USD},
                         headers=w.h(w.alpha.token))
    assert limit.status_code == 403
    prices = w.client.post(f"/orgs/{org}/price-lists", headers=w.h(w.alpha.token), json={
        "currency": "USD", "effective_from": "2020-01-01T00:00:00Z", "discount_bp": 9000})
    assert prices.status_code == 403
    # a project member has no binding on the org's path (only below it): 404 as for strangers
    member = w.client.post(f"/orgs/{org}/top-ups", json=body, headers=w.h(w.member))
    assert member.status_code == 404
    # another tenant does not learn the org exists
    other = w.client.post(f"/orgs/{org}/top-ups", json=body, headers=w.h(w.beta.token))
    assert other.status_code == 404
    assert _transfers(w, org) == []


def test_adjustments_and_credit_limit_by_staff(billing_world: World) -> None:
    w, org = billing_world, billing_world.alpha.org_id
    limit = w.client.put(f"/orgs/{org}/credit-limit", headers=w.h(w.staff),
                         json={"currency": "USD", "credit_limit": 5 * USD})
    assert limit.status_code == 200 and limit.json()["credit_limit"] == 5 * USD
    charge = w.client.post(f"/orgs/{org}/adjustments", headers=w.h(w.staff), json={
        "amount": -3 * USD, "currency": "USD", "reason": "support", "idempotency_key": "a1"})
    assert charge.status_code == 201, charge.text
    too_far = w.client.post(f"/orgs/{org}/adjustments", headers=w.h(w.staff), json={
        "amount": -3 * USD, "currency": "USD", "reason": "support", "idempotency_key": "a2"})
    assert too_far.status_code in (409, 422), too_far.text
    wallet = w.client.get(f"/orgs/{org}/wallet", headers=w.h(w.staff)).json()
    assert wallet["posted"] == -3 * USD and wallet["credit_limit"] == 5 * USD


def _setup_usage(w: World) -> dict:
    a = w.alpha
    dep, prj = a.get("department_id"), a.get("project_id")
    prj2 = a.post(f"/departments/{dep}/projects", {"name": "vision"})["id"]
    start = utcnow().replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    resp = w.client.post("/price-lists", headers=w.h(w.staff), json={
        "currency": "USD", "effective_from": (start - timedelta(days=40)).isoformat(),
        "prices": [{"meter": "gpu_seconds", "unit_price": 2 * USD, "per_quantity": 3600},
                   {"meter": "vcpu_seconds", "unit_price": 36_000, "per_quantity": 3600}]})
    assert resp.status_code == 201, resp.text
    top = w.client.post(f"/orgs/{a.org_id}/top-ups", headers=w.h(w.staff),
                        json={"amount": 100 * USD, "currency": "USD", "idempotency_key": "t"})
    assert top.status_code == 201
    records = []
    for i, (p, meter, qty, who) in enumerate([(prj, "gpu_seconds", 7200, a.owner_id),
                                              (prj, "vcpu_seconds", 3600, a.owner_id),
                                              (prj2, "gpu_seconds", 3600, "usr_other")]):
        records.append({
            "resource_id": f"inst_{i}", "project_id": p,
            "scope_path": f"/{a.org_id}/{dep}/{p}",
            "principal_id": who, "meter": meter, "quantity": qty,
            "dimension_value": "H100" if meter == "gpu_seconds" else "",
            # Windows of a second at the month's start: usage cannot end in the future,
            # and this test may run minutes into a month.
            "window_start": (start + timedelta(seconds=i)).isoformat(),
            "window_end": (start + timedelta(seconds=i + 1)).isoformat(),
            "idempotency_key": f"u{i}"})
    resp = w.client.post("/usage", json={"records": records}, headers=w.h(w.admin))
    assert resp.status_code == 200 and resp.json()["accepted"] == 3, resp.text
    billing.rate_until_idle(w.ctx.db)
    return {"dep": dep, "prj": prj, "prj2": prj2, "period": start.strftime("%Y-%m"),
            "records": records}


def test_usage_ingestion_conflicts_and_bad_input(billing_world: World) -> None:
    w = billing_world
    ids = _setup_usage(w)
    a = w.alpha
    base = {"resource_id": "inst_0", "project_id": ids["prj"],
            "scope_path": f"/{a.org_id}/{ids['dep']}/{ids['prj']}", "meter": "gpu_seconds",
            "dimension_value": "H100",
            "quantity": 7200, "window_start": "2026-01-01T00:00:00Z",
            "window_end": "2026-01-01T02:00:00Z", "idempotency_key": "u0"}
    conflict = w.client.post("/usage", json={"records": [base]}, headers=w.h(w.admin))
    assert conflict.status_code == 409, conflict.text
    bad = [{**base, "idempotency_key": "n1", "meter": "warp_drive"},
           {**base, "idempotency_key": "n2", "window_end": "2025-12-31T00:00:00Z"},
           {**base, "idempotency_key": "n3", "quantity": 0},
           {**base, "idempotency_key": "n4", "quantity": 10**20}]
    for record in bad:
        resp = w.client.post("/usage", json={"records": [record]}, headers=w.h(w.admin))
        assert resp.status_code == 422, (record, resp.text)
    # tenants do not report their own usage (a platform-scope permission: 403)
    own = w.client.post("/usage", json={"records": [{**base, "idempotency_key": "n5"}]},
                        headers=w.h(a.token))
    assert own.status_code == 403
    # the same records again: duplicates, accepted once, nothing new charged
    again = w.client.post("/usage", json={"records": ids["records"]}, headers=w.h(w.admin))
    assert again.status_code == 200 and again.json()["duplicates"] == 3, again.text
    assert again.json()["accepted"] == 0


def test_statement_json_and_csv_equal_the_ledger(billing_world: World) -> None:
    w = billing_world
    ids = _setup_usage(w)
    org = w.alpha.org_id
    url = f"/orgs/{org}/statements/{ids['period']}"
    st = w.client.get(url, headers=w.h(w.alpha.token))
    assert st.status_code == 200, st.text
    body = st.json()
    wallet = w.client.get(f"/orgs/{org}/wallet", headers=w.h(w.alpha.token)).json()
    assert body["closing_balance"] == wallet["posted"]
    assert body["opening_balance"] + sum(x["amount"] for x in body["lines"]) == wallet["posted"]
    ledger = sum(t["amount"] if t["credit_account_id"] == wallet["account_id"] else -t["amount"]
                 for t in _transfers(w, org))
    assert ledger == wallet["posted"] == 100 * USD - 4 * USD - 36_000 - 2 * USD
    usage = [x for x in body["lines"] if x["kind"] == "usage"]
    assert {(x["project_id"], x["meter"]) for x in usage} == {
        (ids["prj"], "gpu_seconds"), (ids["prj"], "vcpu_seconds"), (ids["prj2"], "gpu_seconds")}
    rows = list(csv.DictReader(io.StringIO(
        w.client.get(url, params={"format": "csv"}, headers=w.h(w.alpha.token)).text)))
    assert rows[-1]["kind"] == "closing_balance"
    assert int(rows[-1]["amount"]) == wallet["posted"]
    assert sum(int(r["amount"]) for r in rows[1:-1]) == wallet["posted"] - int(rows[0]["amount"])
    # neither a project member (bound below the org) nor another tenant reads it
    assert w.client.get(url, headers=w.h(w.member)).status_code == 404
    assert w.client.get(url, headers=w.h(w.beta.token)).status_code == 404
    bad = w.client.get(f"/orgs/{org}/statements/2026-13", headers=w.h(w.alpha.token))
    assert bad.status_code == 422


def test_cost_report_groups_and_csv(billing_world: World) -> None:
    w = billing_world
    ids = _setup_usage(w)
    org = w.alpha.org_id
    start = ids["period"] + "-01T00:00:00Z"
    end = (utcnow() + timedelta(days=1)).isoformat()
    q = {"from": start, "to": end, "group_by": "project,meter"}
    rep = w.client.get(f"/scopes/{org}/cost-report", params=q, headers=w.h(w.alpha.token))
    assert rep.status_code == 200, rep.text
    got = {(r["key"]["project"], r["key"]["meter"]): r["amount"] for r in rep.json()["rows"]}
    assert got == {(ids["prj"], "gpu_seconds"): 4 * USD, (ids["prj"], "vcpu_seconds"): 36_000,
                   (ids["prj2"], "gpu_seconds"): 2 * USD}
    by_user = w.client.get(f"/scopes/{ids['dep']}/cost-report", headers=w.h(w.alpha.token),
                           params={**q, "group_by": "user,day"}).json()
    assert sum(r["amount"] for r in by_user["rows"]) == by_user["total"]["USD"] == 6_036_000
    assert {r["key"]["user"] for r in by_user["rows"]} == {w.alpha.owner_id, "usr_other"}
    only_prj2 = w.client.get(f"/scopes/{ids['prj2']}/cost-report", headers=w.h(w.alpha.token),
                             params=q).json()
    assert only_prj2["total"] == {"USD": 2 * USD}
    text = w.client.get(f"/scopes/{org}/cost-report", headers=w.h(w.alpha.token),
                        params={**q, "format": "csv"})
    assert text.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(text.text)))
    assert sorted((r["project"], r["meter"], int(r["amount"])) for r in rows) == sorted(
        (p, m, a) for (p, m), a in got.items())
    for bad in ({**q, "to": "2000-01-01T00:00:00Z"}, {**q, "group_by": "planet"}):
        resp = w.client.get(f"/scopes/{org}/cost-report", params=bad,
                            headers=w.h(w.alpha.token))
        assert resp.status_code == 422, resp.text
    assert w.client.get(f"/scopes/{org}/cost-report", params=q,
                        headers=w.h(w.beta.token)).status_code == 404


def test_budget_alerts_visible_to_scope_admins_only(billing_world: World) -> None:
    w = billing_world
    ids = _setup_usage(w)
    a = w.alpha
    budget = w.client.post(f"/scopes/{ids['prj']}/budgets", headers=w.h(a.token), json={
        "amount": 5 * USD, "currency": "USD", "thresholds": [50, 80, 100],
        "webhook_url": "https://hooks.example/b", "webhook_secret": "s3cret-s3cret-s3cret"})
    assert budget.status_code == 201, budget.text
    assert "s3cret" not in budget.text and budget.json()["has_webhook_secret"]
    bad = w.client.post(f"/scopes/{ids['prj']}/budgets", headers=w.h(a.token),
                        json={"amount": 5 * USD, "currency": "ZZZ"})
    assert bad.status_code == 422
    with w.ctx.db.transaction() as s:
        billing.evaluate_budgets(s)
    alerts = w.client.get(f"/scopes/{a.org_id}/budget-alerts", headers=w.h(a.token))
    assert alerts.status_code == 200
    # spend on the project is 4.036 USD of 5: the 50% and 80% thresholds
    assert sorted(x["threshold"] for x in alerts.json()) == [50, 80]
    assert all(x["budget_id"] == budget.json()["id"] for x in alerts.json())
    assert w.client.get(f"/scopes/{ids['prj']}/budget-alerts",
                        headers=w.h(w.member)).status_code == 403
    assert w.client.get(f"/scopes/{ids['prj']}/budget-alerts",
                        headers=w.h(w.beta.token)).status_code == 404
    listed = w.client.get(f"/scopes/{ids['dep']}/budgets", headers=w.h(a.token)).json()
    assert [b["id"] for b in listed] == [budget.json()["id"]]
    bid = budget.json()["id"]
    assert w.client.delete(f"/budgets/{bid}", headers=w.h(w.member)).status_code == 403
    assert w.client.delete(f"/budgets/{bid}", headers=w.h(w.beta.token)).status_code == 404
    assert w.client.delete(f"/budgets/{bid}", headers=w.h(a.token)).status_code == 204
    assert w.client.get(f"/budgets/{bid}", headers=w.h(a.token)).status_code == 404
