from __future__ import annotations

import threading
from datetime import timedelta

import pytest

from aicloud.platform import billing
from aicloud.shared.clock import utcnow
from aicloud.shared.db import Database
from aicloud.shared.errors import AppError, Conflict, NotFound, ValidationFailed
from tests.platform.billing.factories import (
    ADMIN,
    ORG_H,
    ORG_OTHER,
    assert_ledger_clean,
)


def _wallet(db: Database, amount: int) -> tuple[str, str]:
    with db.transaction() as s:
        billing.top_up(s, actor=ADMIN, org_id=ORG_H, amount=amount, currency="USD",
                       idempotency_key="fund")
        return (billing.org_wallet(s, ORG_H, "USD").id,
                billing.platform_account(s, "revenue", "USD").id)


def _hold(db: Database, wallet: str, revenue: str, amount: int, key: str,
          ttl: timedelta = timedelta(hours=1)) -> billing.Hold:
    with db.transaction() as s:
        return billing.create_hold(s, actor=ADMIN, account_id=wallet, counter_account_id=revenue,
                                   amount=amount, currency="USD", idempotency_key=key, ttl=ttl)


def test_hold_reserves_then_posts_part_and_releases_the_rest(db: Database) -> None:
    wallet, revenue = _wallet(db, 1_000)
    h = _hold(db, wallet, revenue, 600, "h1")
    assert _hold(db, wallet, revenue, 600, "h1").id == h.id  # idempotent
    with db.transaction() as s:
        assert billing.balance(s, wallet).available == 400
    with pytest.raises(Conflict, match="insufficient funds"):
        _hold(db, wallet, revenue, 500, "h2")
    with db.transaction() as s:
        posted = billing.post_hold(s, actor=ADMIN, hold_id=h.id, amount=250)
        assert (posted.status, posted.posted_amount) == ("posted", 250)
        b = billing.balance(s, wallet)
        assert (b.posted, b.held, b.available) == (750, 0, 750)
    with db.transaction() as s, pytest.raises(Conflict, match="is posted"):
        billing.void_hold(s, actor=ADMIN, hold_id=h.id)
    with db.transaction() as s, pytest.raises(ValidationFailed):
        billing.post_hold(s, actor=ADMIN, hold_id=_hold(db, wallet, revenue, 10, "h3").id,
                          amount=11)
    assert_ledger_clean(db)


def test_void_and_expiry_release_funds(db: Database) -> None:
    wallet, revenue = _wallet(db, 1_000)
    h = _hold(db, wallet, revenue, 900, "h1")
    with db.transaction() as s:
        billing.void_hold(s, actor=ADMIN, hold_id=h.id)
        assert billing.balance(s, wallet).available == 1_000
    short = _hold(db, wallet, revenue, 900, "h2", ttl=timedelta(seconds=30))
    later = utcnow() + timedelta(minutes=1)
    with db.transaction() as s:
        assert billing.balance(s, wallet, now=later).available == 1_000
        assert billing.expire_holds(s, now=later) == 1
        assert billing.get_hold(s, short.id).status == "expired"
    with db.transaction() as s, pytest.raises(Conflict, match="expired"):
        billing.post_hold(s, actor=ADMIN, hold_id=short.id)
    assert_ledger_clean(db)


def test_bad_holds_are_refused(db: Database) -> None:
    wallet, revenue = _wallet(db, 1_000)
    for amount, currency, ttl in ((0, "USD", 60), (-1, "USD", 60), (5, "EUR", 60),
                                  (5, "ZZZ", 60), (5, "USD", 0)):
        with db.transaction() as s, pytest.raises(ValidationFailed):
            billing.create_hold(s, actor=ADMIN, account_id=wallet, counter_account_id=revenue,
                                amount=amount, currency=currency, idempotency_key="bad",
                                ttl=timedelta(seconds=ttl))


def test_twenty_concurrent_holds_against_a_wallet_that_funds_five(db: Database) -> None:
    wallet, revenue = _wallet(db, 5_000)
    results: list[str] = []
    barrier = threading.Barrier(20)

    def attempt(i: int) -> None:
        barrier.wait()
        try:
            _hold(db, wallet, revenue, 1_000, f"c-{i}")
            results.append("ok")
        except AppError as exc:
            results.append(type(exc).__name__)

    threads = [threading.Thread(target=attempt, args=(i,)) for i in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert results.count("ok") == 5
    assert results.count("Conflict") == 15
    with db.transaction() as s:
        assert billing.balance(s, wallet).available == 0


def test_org_holds_keys_have_their_own_namespace_and_replays_compare_everything(
    db: Database,
) -> None:
    wallet, revenue = _wallet(db, 1_000)
    inner = _hold(db, wallet, revenue, 100, "gpuaas:inst_1")
    with db.transaction() as s:
        # a client's key equal to an in-process caller's key is another hold
        h = billing.create_org_hold(s, actor=ADMIN, org_id=ORG_H, amount=100,
                                    currency="USD", idempotency_key="gpuaas:inst_1",
                                    reason="api")
        assert h.id != inner.id and h.counter_account_id == revenue and h.account_id == wallet
    with db.transaction() as s:
        assert billing.create_org_hold(s, actor=ADMIN, org_id=ORG_H, amount=100,
                                       currency="USD", idempotency_key="gpuaas:inst_1",
                                       reason="api").id == h.id
    for change in ({"reason": "other"}, {"ttl": timedelta(minutes=5)},
                   {"cause_id": "job_1"}):
        args = {"reason": "api", "ttl": timedelta(hours=1), **change}
        with db.transaction() as s, pytest.raises(Conflict, match="another hold"):
            billing.create_org_hold(s, actor=ADMIN, org_id=ORG_H, amount=100,
                                    currency="USD", idempotency_key="gpuaas:inst_1", **args)
    with db.transaction() as s:
        assert [x.id for x in billing.list_org_holds(s, ORG_H)] == sorted([inner.id, h.id])
        assert billing.list_org_holds(s, ORG_OTHER) == []
        with pytest.raises(NotFound):
            billing.get_org_hold(s, ORG_OTHER, h.id)


def test_post_with_a_key_is_retry_safe_and_void_is_idempotent(db: Database) -> None:
    wallet, revenue = _wallet(db, 1_000)
    h = _hold(db, wallet, revenue, 300, "p1")
    with db.transaction() as s:
        billing.post_hold(s, actor=ADMIN, hold_id=h.id, amount=200, idempotency_key="k")
    with db.transaction() as s:
        again = billing.post_hold(s, actor=ADMIN, hold_id=h.id, amount=200,
                                  idempotency_key="k")
        assert (again.status, again.posted_amount) == ("posted", 200)
        assert billing.balance(s, wallet).posted == 800
    for amount, key in ((None, "k"), (100, "k"), (200, "other"), (200, None)):
        with db.transaction() as s, pytest.raises(Conflict):
            billing.post_hold(s, actor=ADMIN, hold_id=h.id, amount=amount,
                              idempotency_key=key)
    v = _hold(db, wallet, revenue, 100, "v1")
    with db.transaction() as s:
        billing.void_hold(s, actor=ADMIN, hold_id=v.id)
    with db.transaction() as s:
        assert billing.void_hold(s, actor=ADMIN, hold_id=v.id).status == "voided"
    assert_ledger_clean(db)
