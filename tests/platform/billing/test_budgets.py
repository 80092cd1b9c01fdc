from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from datetime import datetime, timedelta

import pytest
import sqlalchemy as sa

from aicloud.platform import billing
from aicloud.shared import events
from aicloud.shared.clock import FakeClock
from aicloud.shared.db import Database
from aicloud.shared.errors import ValidationFailed
from tests.platform.billing.factories import (
    ADMIN,
    DEP_A,
    ORG_A,
    PRJ_A,
    PRJ_B,
    T0,
    rate_all,
    setup_catalog,
    usage,
)
from tests.platform.billing.receiver import Receiver

NOW = T0 + timedelta(days=10)
SECRET = "per-budget-secret-0123456789"


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver(fail_first=2)
    yield r
    r.close()


def _spend(db: Database, key: str, seconds: int, project: str = PRJ_A) -> None:
    # A100 at 3.60/h = 1000 micro-units per second
    with db.transaction() as s:
        billing.ingest_usage(s, [usage(key, project=project, quantity=seconds,
                                       start=NOW - timedelta(days=1))], actor=ADMIN)
    rate_all(db)


# The test receivers listen on 127.0.0.1: an operator's exception to the public-only rule.
LOCAL = billing.WebhookPolicy(allow=("127.0.0.1/32",))


def _budget(db: Database, scope: str, **kw: object) -> billing.Budget:
    with db.transaction() as s:
        return billing.create_budget(s, actor=ADMIN, spec=billing.BudgetCreate(
            scope_path=scope, amount=1_000_000, currency="USD", **kw), webhooks=LOCAL,
            now=NOW)


def _evaluate(db: Database) -> list[billing.BudgetAlert]:
    with db.transaction() as s:
        return billing.evaluate_budgets(s, now=NOW)


def test_thresholds_alert_once_and_block_launches_at_100(db: Database) -> None:
    setup_catalog(db)
    org = _budget(db, f"/{ORG_A}", thresholds=[50, 80, 100], action="block_launches")
    prj = _budget(db, f"/{ORG_A}/{DEP_A}/{PRJ_B}", thresholds=[100])
    _spend(db, "u1", 600)  # 0.60 of 1.00 in PRJ_A
    assert [a.threshold for a in _evaluate(db)] == [50]
    assert _evaluate(db) == []  # once per month
    _spend(db, "u2", 500)  # 1.10
    assert [a.threshold for a in _evaluate(db)] == [80, 100]
    with db.transaction() as s:
        assert [a.threshold for a in billing.list_alerts(s, f"/{ORG_A}")] == [100, 80, 50]
        assert billing.launches_blocked(s, f"/{ORG_A}/{DEP_A}/{PRJ_A}",
                                        now=NOW)[0].budget_id == org.id
        assert billing.launches_blocked(s, "/org_z/dep/prj", now=NOW) == []
        assert billing.launches_blocked(s, f"/{ORG_A}/{DEP_A}/{PRJ_A}",
                                        now=NOW + timedelta(days=31)) == []  # next month
        [evt] = events.read(s, "gpuaas", topics=[billing.EXCEEDED_TOPIC])
        assert evt.payload["action"] == "block_launches"
        assert evt.payload["scope_path"] == f"/{ORG_A}"
        assert billing.list_alerts(s, prj.scope_path) == []  # PRJ_B spent nothing


def test_bad_budgets_are_refused(db: Database) -> None:
    for kw in ({"scope_path": ORG_A}, {"scope_path": "/a/b/c/d"},
               {"currency": "XYZ"}, {"thresholds": [0]}, {"webhook_url": "ftp://x"}):
        spec = {"scope_path": f"/{ORG_A}", "amount": 5, "currency": "USD", **kw}
        with db.transaction() as s, pytest.raises(ValidationFailed):
            billing.create_budget(s, actor=ADMIN, spec=billing.BudgetCreate(**spec))
    with pytest.raises(ValueError):
        billing.BudgetCreate(scope_path=f"/{ORG_A}", amount=0, currency="USD")


def test_webhook_is_signed_retried_and_delivered_once(db: Database,
                                                       receiver: Receiver) -> None:
    setup_catalog(db)
    _budget(db, f"/{ORG_A}/{DEP_A}", thresholds=[100], webhook_url=receiver.url,
            webhook_secret=SECRET)
    _spend(db, "u1", 1000)
    assert [a.threshold for a in _evaluate(db)] == [100]
    clock = FakeClock(NOW)
    assert billing.deliver_due(db, default_secret="unused", clock=clock,
                               policy=LOCAL) == 0  # 500
    assert billing.deliver_due(db, default_secret="unused", clock=clock,
                               policy=LOCAL) == 0  # not due yet
    for _ in range(2):
        clock.advance(minutes=10)
        billing.deliver_due(db, default_secret="unused", clock=clock, policy=LOCAL)
    clock.advance(hours=2)
    assert billing.deliver_due(db, default_secret="unused", clock=clock,
                               policy=LOCAL) == 0  # nothing left
    assert len(receiver.received) == 3  # two failures, then success
    body, headers = receiver.received[-1]
    assert billing.verify(SECRET, body, headers[billing.SIGNATURE_HEADER])
    assert not billing.verify("another-secret-xxxxxxxx", body, headers[billing.SIGNATURE_HEADER])
    payload = json.loads(body)
    assert payload["alert"]["threshold"] == 100
    assert payload["alert"]["scope_path"] == f"/{ORG_A}/{DEP_A}"
    with db.engine.connect() as c:
        status, attempts = c.execute(sa.text(
            "SELECT status, attempts FROM billing_webhook_deliveries")).one()
    assert (status, attempts) == ("delivered", 3)
    with db.engine.connect() as c:
        changes = c.scalar(sa.text(
            "SELECT changes FROM audit_events WHERE action = 'billing.budget.create'"))
    assert SECRET not in changes and "********" in changes


def test_webhook_without_its_own_secret_is_signed_with_the_configured_one(
        db: Database) -> None:
    receiver = Receiver()
    try:
        setup_catalog(db)
        _budget(db, f"/{ORG_A}", thresholds=[50], webhook_url=receiver.url)
        _spend(db, "u1", 600)
        _evaluate(db)
        assert billing.deliver_due(db, default_secret="configured-secret-abcdef",
                                   clock=FakeClock(NOW), policy=LOCAL) == 1
        [(body, headers)] = receiver.received
        assert billing.verify("configured-secret-abcdef", body,
                              headers[billing.SIGNATURE_HEADER])
    finally:
        receiver.close()


def _rate_at(db: Database, now: datetime) -> None:
    with db.transaction() as s:
        billing.rate_batch(s, now=now)


def _ingest(db: Database, key: str, seconds: int, *, rate: bool = True) -> None:
    with db.transaction() as s:
        billing.ingest_usage(s, [usage(key, quantity=seconds, start=NOW - timedelta(hours=1))],
                             actor=ADMIN, rate=rate, now=NOW)


@pytest.mark.parametrize("at_ingestion", [True, False],
                         ids=["rated-at-ingestion", "rated-by-rater"])
def test_the_rater_evaluates_budgets_in_the_transaction_that_posts_the_spend(
        db: Database, at_ingestion: bool) -> None:
    """Whoever rates (ingestion as it stores the usage, or the rater), the budgets above what
    it charged are judged in the transaction that posts the charge."""
    setup_catalog(db)
    # A stop budget listing no 100% threshold: the action applies at 100% all the same.
    stop = _budget(db, f"/{ORG_A}/{DEP_A}", thresholds=[50], action="stop_workloads")
    assert stop.thresholds == [50, 100]
    _budget(db, f"/{ORG_A}/{DEP_A}/{PRJ_B}", thresholds=[10])  # PRJ_B spends nothing
    _ingest(db, "u1", 600, rate=at_ingestion)
    _rate_at(db, NOW)  # no evaluate_budgets call: rating did it
    with db.transaction() as s:
        assert [a.threshold for a in billing.list_alerts(s, f"/{ORG_A}")] == [50]
        assert billing.launches_blocked(s, f"/{ORG_A}/{DEP_A}/{PRJ_A}", now=NOW) == []
    _ingest(db, "u2", 400, rate=at_ingestion)  # 1.00 of 1.00
    _rate_at(db, NOW)
    with db.transaction() as s:
        assert [a.threshold for a in billing.list_alerts(s, f"/{ORG_A}")] == [100, 50]
        [evt] = events.read(s, "test", topics=[billing.EXCEEDED_TOPIC])
        assert (evt.payload["action"], evt.payload["spend"]) == ("stop_workloads", 1_000_000)
        assert billing.launches_blocked(s, f"/{ORG_A}/{DEP_A}/{PRJ_A}", now=NOW)


def test_a_budget_already_exceeded_blocks_at_creation_and_unblocks_when_deleted(
        db: Database) -> None:
    setup_catalog(db)
    _ingest(db, "u1", 1500)
    _rate_at(db, NOW)
    with db.transaction() as s:
        assert billing.launches_blocked(s, f"/{ORG_A}/{DEP_A}/{PRJ_A}", now=NOW) == []
    budget = _budget(db, f"/{ORG_A}", thresholds=[80], action="block_launches")
    with db.transaction() as s:
        [blocked] = billing.launches_blocked(s, f"/{ORG_A}/{DEP_A}/{PRJ_A}", now=NOW)
        assert blocked.budget_id == budget.id and blocked.spend == 1_500_000
        billing.delete_budget(s, actor=ADMIN, budget_id=budget.id)
    with db.transaction() as s:
        assert billing.launches_blocked(s, f"/{ORG_A}/{DEP_A}/{PRJ_A}", now=NOW) == []
        # the alerts stay as history
        assert {a.threshold for a in billing.list_alerts(s, f"/{ORG_A}")} == {80, 100}


def test_two_raters_at_once_cannot_both_miss_a_crossed_budget(db: Database) -> None:
    """Each rater's charge alone stays under the budget; together they cross it. The raters
    overlap (the first has posted and evaluated but not committed when the second rates):
    the wallet's row lock makes the second wait, then see both charges."""
    if db.engine.dialect.name != "postgresql":
        pytest.skip("SQLite serializes writers: raters never overlap")
    setup_catalog(db)
    _budget(db, f"/{ORG_A}", thresholds=[100], action="block_launches")
    with db.transaction() as s:
        billing.ingest_usage(s, [
            usage(k, resource=f"inst_{k}", quantity=600, start=NOW - timedelta(hours=1))
            for k in ("a", "b")], actor=ADMIN, rate=False)
    first = db.session()
    first.begin()
    try:
        assert billing.rate_batch(first, batch_size=1, now=NOW).rated == 1
        done = threading.Event()

        def second() -> None:
            with db.transaction() as s:
                assert billing.rate_batch(s, batch_size=1, now=NOW).rated == 1
            done.set()

        t = threading.Thread(target=second)
        t.start()
        waited = not done.wait(1.0)  # on the wallet the first rater charged
        first.commit()
    finally:
        first.close()
    t.join(10)
    assert waited and done.is_set()
    with db.transaction() as s:
        [alert] = billing.list_alerts(s, f"/{ORG_A}")
        assert (alert.threshold, alert.spend) == (100, 1_200_000)
        assert billing.launches_blocked(s, f"/{ORG_A}/{DEP_A}/{PRJ_A}", now=NOW)
