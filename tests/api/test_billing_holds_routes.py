"""Holds over HTTP: the two-phase money path a product outside the API process uses, who may
make and read holds, and the product-biller role for a platform service account."""

from __future__ import annotations

import time

import httpx
import pytest

from aicloud.platform import billing
from aicloud.runtime import AppContext
from tests.api.billing_world import USD, World
from tests.conftest import LiveServer


def _top_up(w: World, org: str, amount: int, key: str) -> None:
    resp = w.client.post(f"/orgs/{org}/top-ups", headers=w.h(w.staff, key),
                         json={"amount": amount, "currency": "USD"})
    assert resp.status_code == 201, resp.text


def _wallet(w: World, org: str) -> dict:
    resp = w.client.get(f"/orgs/{org}/wallet", headers=w.h(w.staff))
    assert resp.status_code == 200, resp.text
    return resp.json()


def _audit(w: World, action: str) -> list[dict]:
    resp = w.client.get("/audit/events", params={"action": action}, headers=w.h(w.admin))
    assert resp.status_code == 200, resp.text
    return resp.json()["items"]


def _create(w: World, org: str, token: str, key: str | None, **body: object) -> httpx.Response:
    payload = {"amount": 30 * USD, "currency": "USD", "ttl_seconds": 600,
               "reason": "admission", **body}
    return w.client.post(w.holds(org), json=payload, headers=w.h(token, key))


def test_hold_lifecycle_reserve_post_part_release_the_rest(billing_world: World) -> None:
    w, org = billing_world, billing_world.alpha.org_id
    _top_up(w, org, 100 * USD, "fund-1")
    created = _create(w, org, w.staff, "h-1", cause_type="job", cause_id="job_42")
    assert created.status_code == 201, created.text
    hold = created.json()
    assert (hold["status"], hold["amount"], hold["posted_amount"]) == ("pending", 30 * USD, 0)
    assert (hold["cause_type"], hold["cause_id"]) == ("job", "job_42")
    wallet = _wallet(w, org)
    assert (wallet["posted"], wallet["held"], wallet["available"]) == (
        100 * USD, 30 * USD, 70 * USD)
    assert hold["account_id"] == wallet["account_id"]
    with w.ctx.db.transaction() as s:  # the counter account is the platform's revenue
        revenue = billing.platform_account(s, "revenue", "USD").id
    assert hold["counter_account_id"] == revenue

    # an idempotent retry (header or body key) returns the same hold and reserves nothing more
    again = _create(w, org, w.staff, "h-1", cause_type="job", cause_id="job_42")
    assert again.status_code == 201 and again.json()["id"] == hold["id"]
    body_key = _create(w, org, w.staff, None, cause_type="job", cause_id="job_42",
                       idempotency_key="h-1")
    assert body_key.status_code == 201 and body_key.json()["id"] == hold["id"]
    for other in ({"amount": 31 * USD}, {"reason": "other"}, {"ttl_seconds": 601}):
        conflict = _create(w, org, w.staff, "h-1", cause_type="job", cause_id="job_42",
                           **other)
        assert conflict.status_code == 409, (other, conflict.text)
        assert conflict.headers["content-type"].startswith("application/problem+json")
    assert _wallet(w, org)["held"] == 30 * USD

    listed = w.client.get(w.holds(org), headers=w.h(w.alpha.token)).json()
    assert [x["id"] for x in listed["items"]] == [hold["id"]]

    url = f"{w.holds(org)}/{hold['id']}"
    posted = w.client.post(f"{url}/post", json={"amount": 12 * USD},
                           headers=w.h(w.staff, "post-1"))
    assert posted.status_code == 200, posted.text
    assert (posted.json()["status"], posted.json()["posted_amount"]) == ("posted", 12 * USD)
    wallet = _wallet(w, org)  # debited exactly the posted part; the rest is released
    assert (wallet["posted"], wallet["held"], wallet["available"]) == (
        88 * USD, 0, 88 * USD)
    with w.ctx.db.transaction() as s:
        assert billing.balance(s, revenue).posted == 12 * USD
    transfers = w.client.get(f"/orgs/{org}/wallet/transfers", headers=w.h(w.staff)).json()
    [charge] = [t for t in transfers if t["reason"] == "hold_post"]
    assert (charge["amount"], charge["debit_account_id"], charge["credit_account_id"],
            charge["hold_id"], charge["cause_id"]) == (
        12 * USD, wallet["account_id"], revenue, hold["id"], "job_42")

    # a retried post (same key and amount) answers the posted hold; nothing posts twice
    retry = w.client.post(f"{url}/post", json={"amount": 12 * USD, "idempotency_key": "post-1"},
                          headers=w.h(w.staff))
    assert retry.status_code == 200 and retry.json() == posted.json()
    for body, key in (({"amount": 13 * USD}, "post-1"), ({"amount": 12 * USD}, "post-2"),
                      ({}, "post-1")):
        resp = w.client.post(f"{url}/post", json=body, headers=w.h(w.staff, key))
        assert resp.status_code == 409, (body, key, resp.text)
    assert w.client.post(f"{url}/void", headers=w.h(w.staff)).status_code == 409
    assert _wallet(w, org)["posted"] == 88 * USD
    assert w.client.get(url, headers=w.h(w.alpha.token)).json()["status"] == "posted"

    # audited, in the org's scope (so the org's auditors see it)
    [create_event] = _audit(w, "billing.hold.create")
    [post_event] = _audit(w, "billing.hold.post")
    assert create_event["scope_path"] == post_event["scope_path"] == f"/{org}"
    assert post_event["details"]["posted_amount"] == 12 * USD
    assert post_event["details"]["released"] == 18 * USD
    with w.ctx.db.transaction() as s:
        assert billing.check_ledger(s).ok


def test_post_all_without_a_body_and_insufficient_funds(billing_world: World) -> None:
    w, org = billing_world, billing_world.alpha.org_id
    _top_up(w, org, 10 * USD, "fund-1")
    too_much = _create(w, org, w.staff, "big", amount=11 * USD)
    assert too_much.status_code == 409 and "insufficient funds" in too_much.text
    hold = _create(w, org, w.staff, "all", amount=4 * USD).json()
    url = f"{w.holds(org)}/{hold['id']}/post"
    assert w.client.post(url, headers=w.h(w.staff)).status_code == 422  # a key is required
    posted = w.client.post(url, headers=w.h(w.staff, "post-all"))
    assert posted.status_code == 200, posted.text
    assert posted.json()["posted_amount"] == 4 * USD
    assert _wallet(w, org)["posted"] == 6 * USD


def test_void_and_expiry_release_the_funds(billing_world: World) -> None:
    w, org = billing_world, billing_world.alpha.org_id
    _top_up(w, org, 100 * USD, "fund-1")
    hold = _create(w, org, w.staff, "v-1", amount=50 * USD).json()
    url = f"{w.holds(org)}/{hold['id']}"
    voided = w.client.post(f"{url}/void", headers=w.h(w.staff))
    assert voided.status_code == 200 and voided.json()["status"] == "voided"
    assert _wallet(w, org)["available"] == 100 * USD
    again = w.client.post(f"{url}/void", headers=w.h(w.staff))  # a retried void is harmless
    assert again.status_code == 200 and again.json() == voided.json()
    post = w.client.post(f"{url}/post", headers=w.h(w.staff, "p-1"))
    assert post.status_code == 409 and "voided" in post.text
    assert (post.json()["status"], post.json()["hold_status"]) == (409, "voided")
    assert len(_audit(w, "billing.hold.void")) == 1

    short = _create(w, org, w.staff, "short", amount=60 * USD, ttl_seconds=1).json()
    assert _wallet(w, org)["available"] == 40 * USD
    time.sleep(1.2)
    surl = f"{w.holds(org)}/{short['id']}"
    # past its expiry it reserves nothing and reads as expired, before any sweep
    assert _wallet(w, org)["available"] == 100 * USD
    assert w.client.get(surl, headers=w.h(w.alpha.token)).json()["status"] == "expired"
    expired = w.client.get(w.holds(org), params={"status": "expired"},
                           headers=w.h(w.alpha.token)).json()["items"]
    assert [x["id"] for x in expired] == [short["id"]]
    assert w.client.get(w.holds(org), params={"status": "pending"},
                        headers=w.h(w.alpha.token)).json()["items"] == []
    late = w.client.post(f"{surl}/post", headers=w.h(w.staff, "late"))
    assert late.status_code == 409 and "expired" in late.text
    assert w.client.post(f"{surl}/void", headers=w.h(w.staff)).status_code == 409
    with w.ctx.db.transaction() as s:  # the billing-hold-expiry controller's sweep
        assert billing.expire_holds(s) == 1
    assert w.client.get(surl, headers=w.h(w.staff)).json()["status"] == "expired"
    [event] = _audit(w, "billing.hold.expire")
    assert event["scope_path"] == f"/{org}"
    assert _wallet(w, org)["posted"] == 100 * USD
    statuses = {x["id"]: x["status"] for x in w.client.get(
        w.holds(org), headers=w.h(w.staff)).json()["items"]}
    assert statuses == {hold["id"]: "voided", short["id"]: "expired"}


def test_list_pages_with_a_cursor(billing_world: World) -> None:
    w, org = billing_world, billing_world.alpha.org_id
    _top_up(w, org, 100 * USD, "fund-1")
    ids = [_create(w, org, w.staff, f"p-{i}", amount=USD).json()["id"] for i in range(5)]
    first = w.client.get(w.holds(org), params={"limit": 2}, headers=w.h(w.staff)).json()
    seen = [x["id"] for x in first["items"]]
    cursor = first["next_cursor"]
    while cursor:
        nxt = w.client.get(w.holds(org), params={"limit": 2, "cursor": cursor},
                           headers=w.h(w.staff)).json()
        seen += [x["id"] for x in nxt["items"]]
        cursor = nxt["next_cursor"]
    assert seen == ids
    assert w.client.get(w.holds(org), params={"currency": "EUR"},
                        headers=w.h(w.staff)).json()["items"] == []
    assert w.client.get(w.holds(org), params={"status": "lost"},
                        headers=w.h(w.staff)).status_code == 422


@pytest.mark.parametrize("body, key", [
    ({"amount": 0}, "k1"),
    ({"amount": -5}, "k2"),
    ({"amount": 1.5}, "k3"),
    ({"amount": 10**30}, "k4"),
    ({"currency": "XYZ"}, "k5"),
    ({"ttl_seconds": 0}, "k6"),
    ({"ttl_seconds": 31 * 86400 + 1}, "k7"),
    ({"reason": ""}, "k8"),
    ({"reason": "x" * 33}, "k9"),
    ({}, None),
    ({"idempotency_key": "a"}, "b"),
    ({"idempotency_key": "x" * 201}, None),
])
def test_bad_holds_are_422_and_write_nothing(billing_world: World, body: dict,
                                             key: str | None) -> None:
    w, org = billing_world, billing_world.alpha.org_id
    resp = _create(w, org, w.staff, key, **body)
    assert resp.status_code == 422, resp.text
    assert resp.headers["content-type"].startswith("application/problem+json")
    assert w.client.get(w.holds(org), headers=w.h(w.staff)).json()["items"] == []
    assert _wallet(w, org)["account_id"] is None  # not even the wallet was created
    assert _audit(w, "billing.hold.create") == []


def test_posting_more_than_held_is_422_and_writes_nothing(billing_world: World) -> None:
    w, org = billing_world, billing_world.alpha.org_id
    _top_up(w, org, 100 * USD, "fund-1")
    hold = _create(w, org, w.staff, "h", amount=5 * USD).json()
    url = f"{w.holds(org)}/{hold['id']}/post"
    for amount in (5 * USD + 1, 0, -1, 2.5):
        resp = w.client.post(url, json={"amount": amount}, headers=w.h(w.staff, "p"))
        assert resp.status_code == 422, (amount, resp.text)
    assert w.client.get(f"{w.holds(org)}/{hold['id']}",
                        headers=w.h(w.staff)).json()["status"] == "pending"
    assert _wallet(w, org)["posted"] == 100 * USD
    assert _audit(w, "billing.hold.post") == []


def test_tenants_read_their_holds_but_never_make_one(billing_world: World) -> None:
    w, a, b = billing_world, billing_world.alpha, billing_world.beta
    _top_up(w, a.org_id, 100 * USD, "fund-a")
    _top_up(w, b.org_id, 100 * USD, "fund-b")
    hold = _create(w, a.org_id, w.staff, "a-1").json()
    b_hold = _create(w, b.org_id, w.staff, "b-1").json()
    url = f"{w.holds(a.org_id)}/{hold['id']}"
    # the org owner holds billing.* on its org: it reads its holds...
    assert w.client.get(url, headers=w.h(a.token)).status_code == 200
    assert [x["id"] for x in w.client.get(w.holds(a.org_id), headers=w.h(a.token))
            .json()["items"]] == [hold["id"]]
    # ...but a tenant never moves money: 403 on create, post and void
    assert _create(w, a.org_id, a.token, "own").status_code == 403
    assert w.client.post(f"{url}/post", headers=w.h(a.token, "own-post")).status_code == 403
    assert w.client.post(f"{url}/void", headers=w.h(a.token)).status_code == 403
    # another tenant, and a project member bound below the org, do not learn it exists
    for token in (b.token, w.member):
        assert w.client.get(url, headers=w.h(token)).status_code == 404
        assert w.client.get(w.holds(a.org_id), headers=w.h(token)).status_code == 404
        assert _create(w, a.org_id, token, "x").status_code == 404
        assert w.client.post(f"{url}/post", headers=w.h(token, "x")).status_code == 404
        assert w.client.post(f"{url}/void", headers=w.h(token)).status_code == 404
    # another org's hold id under this org is not found, even for platform staff
    cross = f"{w.holds(a.org_id)}/{b_hold['id']}"
    assert w.client.get(cross, headers=w.h(w.staff)).status_code == 404
    assert w.client.post(f"{cross}/post", headers=w.h(w.staff, "x")).status_code == 404
    assert w.client.post(f"{cross}/void", headers=w.h(w.staff)).status_code == 404
    assert w.client.get(f"{w.holds(a.org_id)}/hold_nope", headers=w.h(w.staff)
                        ).status_code == 404
    wallet = _wallet(w, a.org_id)
    assert (wallet["posted"], wallet["held"]) == (100 * USD, 30 * USD)
    assert _wallet(w, b.org_id)["held"] == 30 * USD


def test_a_product_service_account_reports_usage_and_holds_over_http(
    billing_world: World, ctx: AppContext,
) -> None:
    """A platform service account bound to product-biller at the platform, with an API key,
    over a real socket: what a product running elsewhere (App SDK) does."""
    w, a = billing_world, billing_world.alpha
    admin = w.h(w.admin)
    sa = w.client.post("/service-accounts", json={"name": "slurm-product"}, headers=admin)
    assert sa.status_code == 201, sa.text
    assert (sa.json()["org_id"], sa.json()["project_id"]) == (None, None)
    sa_id = sa.json()["id"]
    bound = w.client.post("/scopes/platform/bindings", headers=admin,
                          json={"principal_id": sa_id, "role_id": "product-biller"})
    assert bound.status_code == 201, bound.text
    key = w.client.post(f"/service-accounts/{sa_id}/api-keys", json={"name": "prod"},
                        headers=admin)
    assert key.status_code == 201, key.text
    secret = key.json()["secret"]
    assert sa_id in w.client.get("/service-accounts", headers=admin).text
    assert key.json()["id"] in w.client.get("/api-keys", headers=admin).text

    # tenants neither see nor bind nor create platform service accounts
    assert w.client.get(f"/service-accounts/{sa_id}", headers=w.h(a.token)).status_code == 404
    assert sa_id not in w.client.get("/service-accounts", headers=w.h(a.token)).text
    assert w.client.post(f"/scopes/{a.org_id}/bindings", headers=w.h(a.token), json={
        "principal_id": sa_id, "role_id": "org-owner"}).status_code == 404
    assert w.client.post("/service-accounts", json={"name": "mine"},
                         headers=w.h(a.token)).status_code == 403
    # an org's service account cannot be bound at the platform
    org_sa = a.post(f"/orgs/{a.org_id}/service-accounts", {"name": "ci"})["id"]
    assert w.client.post("/scopes/platform/bindings", headers=admin, json={
        "principal_id": org_sa, "role_id": "product-biller"}).status_code == 404

    _top_up(w, a.org_id, 20 * USD, "fund-1")
    dep, prj = a.get("department_id"), a.get("project_id")
    record = {"resource_id": "job_1", "project_id": prj, "scope_path": f"/{a.org_id}/{dep}/{prj}",
              "meter": "gpu_seconds", "dimension_value": "H100", "quantity": 60,
              "window_start": "2026-01-01T00:00:00Z", "window_end": "2026-01-01T00:01:00Z",
              "idempotency_key": "slurm:job_1:0"}
    with LiveServer(ctx) as server, httpx.Client(
            base_url=server.url, headers={"Authorization": f"Bearer {secret}"}) as product:
        usage = product.post("/usage", json={"records": [record]})
        assert usage.status_code == 200 and usage.json()["accepted"] == 1, usage.text
        created = product.post(f"/orgs/{a.org_id}/holds", headers={"Idempotency-Key": "job_1"},
                               json={"amount": 3 * USD, "currency": "USD", "ttl_seconds": 600,
                                     "reason": "admission", "cause_type": "job",
                                     "cause_id": "job_1"})
        assert created.status_code == 201, created.text
        hold_url = f"/orgs/{a.org_id}/holds/{created.json()['id']}"
        assert product.get(hold_url).json()["status"] == "pending"
        posted = product.post(f"{hold_url}/post", json={"amount": 2 * USD},
                              headers={"Idempotency-Key": "job_1:post"})
        assert posted.status_code == 200 and posted.json()["posted_amount"] == 2 * USD
        # nothing beyond its role: no top-ups, no prices, no IAM, no reading wallets
        assert product.post(f"/orgs/{a.org_id}/top-ups", headers={"Idempotency-Key": "t"},
                            json={"amount": USD, "currency": "USD"}).status_code == 403
        assert product.post("/price-lists", json={
            "currency": "USD", "effective_from": "2020-01-01T00:00:00Z"}).status_code == 403
        assert product.get(f"/orgs/{a.org_id}/wallet").status_code == 403
        assert product.post("/orgs", json={"name": "evil"}).status_code == 403

        # a project member cannot report usage
        member = httpx.post(f"{server.url}/usage", json={"records": [record]},
                            headers={"Authorization": f"Bearer {w.member}"})
        assert member.status_code == 403, member.text
    # 20 topped up, 2 posted from the hold, and the 60 H100-seconds reported, charged as
    # they were ingested (2.52 USD per hour: 42,000 micro-USD)
    assert _wallet(w, a.org_id)["posted"] == 18 * USD - 42_000
    [event] = _audit(w, "billing.hold.post")
    assert event["actor_id"] == sa_id and event["api_key_id"] == key.json()["id"]
    # platform admins manage it like any service account
    assert w.client.patch(f"/service-accounts/{sa_id}", json={"disabled": True},
                          headers=admin).status_code == 200
    assert w.client.get(f"/orgs/{a.org_id}/holds", headers=w.h(secret)).status_code == 401
    assert w.client.delete(f"/service-accounts/{sa_id}", headers=admin).status_code == 204
