from __future__ import annotations

import contextlib
import random
import threading
from datetime import datetime, timedelta

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aicloud.platform import billing
from aicloud.platform.audit import Actor
from aicloud.platform.billing.catalog import ResolvedPrice
from aicloud.shared.db import Database
from aicloud.shared.errors import Conflict, ValidationFailed
from tests.platform.billing.factories import (
    ADMIN,
    DEP_A,
    ORG_A,
    ORG_B,
    ORG_RICH,
    PRJ_A,
    PRJ_C,
    T0,
    assert_ledger_clean,
    ensure_scopes,
    rate_all,
    setup_catalog,
    tenant_path,
    usage,
)

AGENT = Actor.system("gpuaas-metering")


def _ingest(db: Database, records: list[billing.UsageIn], *,
            rate: bool = True) -> billing.IngestResult:
    with db.transaction() as s:
        return billing.ingest_usage(s, records, actor=AGENT, rate=rate)


# Who rates: ingestion, as it stores the records, or the rater, which finds them waiting.
# Every rule of rating holds on both paths.
RATED_BY = pytest.mark.parametrize("at_ingestion", [True, False],
                                   ids=["rated-at-ingestion", "rated-by-rater"])


def _wallet_balance(db: Database, org: str = ORG_A) -> int:
    with db.transaction() as s:
        return billing.balance(s, billing.org_wallet(s, org, "USD").id).posted


def _charges(db: Database) -> dict[str, int]:
    with db.engine.connect() as c:
        return dict(c.execute(sa.text(
            "SELECT idempotency_key, charge FROM billing_usage_records")).all())


def test_ingest_is_idempotent_and_rejects_conflicting_payloads(db: Database) -> None:
    setup_catalog(db)
    first = _ingest(db, [usage("u1"), usage("u2")])
    assert (first.accepted, first.duplicates) == (2, 0)
    again = _ingest(db, [usage("u1"), usage("u3")])
    assert (again.accepted, again.duplicates) == (1, 1)
    assert again.ids[0] == first.ids[0]
    with pytest.raises(Conflict) as exc:
        _ingest(db, [usage("u4"), usage("u1", quantity=61)])
    assert exc.value.status == 409
    assert len(_charges(db)) == 3  # u4 was not written either


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"meter": "teleport_seconds"}, "unknown meter"),
    ({"seconds": -10}, "window_end must be after"),
    ({"dim": ""}, "needs a gpu_model"),
    ({"org": ORG_A, "project": PRJ_A}, None),
])
def test_bad_usage_is_refused_and_nothing_written(db: Database, kwargs: dict,  # type: ignore[type-arg]
                                                  message: str | None) -> None:
    setup_catalog(db)
    if message is None:  # the valid control case
        assert _ingest(db, [usage("ok", **kwargs)]).accepted == 1
        return
    with pytest.raises(ValidationFailed, match=message) as exc:
        _ingest(db, [usage("ok"), usage("bad", **kwargs)])
    assert exc.value.status == 422
    assert _charges(db) == {}


@pytest.mark.parametrize(("change", "message"), [
    ({"scope_path": f"/{ORG_A}/{DEP_A}/{PRJ_C}"}, "must end with the project id"),
    ({"scope_path": f"{ORG_A}/{PRJ_A}"}, "must look like /org/dep/prj"),
    ({"window_start": datetime(2026, 1, 1)}, "window_start must carry a time zone"),
    ({"quantity": 60.0}, "quantity must be"),
    ({"quantity": True}, "quantity must be"),
])
def test_records_changed_after_parsing_are_checked_again(
        db: Database, change: dict, message: str) -> None:  # type: ignore[type-arg]
    """Python callers can alter a parsed UsageIn; the batch checks name the bad record."""
    setup_catalog(db)
    bad = usage("bad").model_copy(update=change)
    with pytest.raises(ValidationFailed, match=f"record 1 \\(bad\\): .*{message}"):
        _ingest(db, [usage("ok"), bad])
    assert _charges(db) == {}


def test_pydantic_refuses_impossible_quantities() -> None:
    for q in (0, -1, 10**20):
        with pytest.raises(ValueError):
            usage("x", quantity=q, seconds=60)


@RATED_BY
def test_rating_charges_each_record_once_per_second(db: Database, at_ingestion: bool) -> None:
    setup_catalog(db)
    _ingest(db, [usage(f"u{i}", quantity=90) for i in range(10)]
            + [usage("h", resource="inst_2", dim="H100", quantity=3600)], rate=at_ingestion)
    assert rate_all(db, batch_size=4) == (0 if at_ingestion else 11)
    assert rate_all(db) == 0
    # A100: 1000 micro/s * 900 s; H100: 7.20 USD for an hour
    assert _wallet_balance(db) == -(900_000 + 7_200_000)
    assert_ledger_clean(db)


@RATED_BY
def test_late_records_use_the_price_of_their_window_and_old_charges_never_change(
        db: Database, at_ingestion: bool) -> None:
    setup_catalog(db)
    _ingest(db, [usage("jan", quantity=100)], rate=at_ingestion)
    rate_all(db)
    with db.transaction() as s:  # the price doubles from February
        billing.create_price_list(s, actor=ADMIN, spec=billing.PriceListCreate(
            currency="USD", effective_from=T0 + timedelta(days=31), prices=[
                billing.PriceIn(meter="gpu_seconds", unit_price=7_200_000, per_quantity=3600)]))
    _ingest(db, [usage("feb", quantity=100, start=T0 + timedelta(days=40)),
                 usage("late-jan", quantity=100, start=T0 + timedelta(days=2))],
            rate=at_ingestion)
    rate_all(db)
    assert _charges(db) == {"jan": 100_000, "late-jan": 100_000, "feb": 200_000}
    assert_ledger_clean(db)


@RATED_BY
def test_org_contract_discount_and_specific_price(db: Database, at_ingestion: bool) -> None:
    setup_catalog(db)
    with db.transaction() as s:
        billing.create_price_list(s, actor=ADMIN, spec=billing.PriceListCreate(
            org_id=ORG_B, currency="USD", effective_from=T0, discount_bp=2_500, prices=[
                billing.PriceIn(meter="vcpu_seconds", unit_price=0, per_quantity=1)]))
    _ingest(db, [usage("g", org=ORG_B, quantity=1000),
                 usage("v", org=ORG_B, meter="vcpu_seconds", quantity=1000),
                 usage("other", quantity=1000)], rate=at_ingestion)
    rate_all(db)
    assert _charges(db) == {"g": 750_000, "v": 0, "other": 1_000_000}
    assert _wallet_balance(db, ORG_B) == -750_000
    assert_ledger_clean(db)


@RATED_BY
def test_usage_without_a_price_waits_until_requeued(db: Database, at_ingestion: bool) -> None:
    setup_catalog(db)
    _ingest(db, [usage("s", meter="storage_gib_hours", quantity=5)], rate=at_ingestion)
    rate_all(db)
    assert _charges(db) == {"s": None}
    with db.transaction() as s:
        billing.create_price_list(s, actor=ADMIN, spec=billing.PriceListCreate(
            currency="USD", effective_from=T0, prices=[
                billing.PriceIn(meter="storage_gib_hours", unit_price=100, per_quantity=1),
                billing.PriceIn(meter="gpu_seconds", unit_price=1, per_quantity=1)]))
        assert billing.requeue_unpriced(s, actor=ADMIN) == 1
    rate_all(db)
    assert _charges(db) == {"s": 500}
    assert_ledger_clean(db)


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(chunks=st.lists(st.integers(min_value=1, max_value=5_000), min_size=1, max_size=25),
       unit_price=st.integers(min_value=1, max_value=50_000_000),
       per_quantity=st.sampled_from([1, 3, 7, 60, 3600, 86_400]),
       discount_bp=st.sampled_from([0, 1, 3333, 5000, 9999]),
       batch_size=st.integers(min_value=1, max_value=10), at_ingestion=st.booleans())
def test_charges_of_a_stream_sum_to_the_rounded_price_of_its_total(
        sqlite_db: Database, chunks: list[int], unit_price: int, per_quantity: int,
        discount_bp: int, batch_size: int, at_ingestion: bool) -> None:
    """Property: however usage is split and batched, and whoever rates it, cumulative
    rounding is exact."""
    db = sqlite_db
    with db.transaction() as s:
        if not billing.list_meters(s):
            billing.register_default_meters(s)
        # Each example gets its own default price version, effective from its own day, and
        # its own org with a discount contract: its own wallet and its own rating stream.
        n = s.scalar(sa.text("SELECT count(*) FROM billing_price_lists"))
        org = f"org_{n:026d}"
        ensure_scopes(s, tenant_path(org))
        day = T0 + timedelta(days=n)
        billing.create_price_list(s, actor=ADMIN, spec=billing.PriceListCreate(
            currency="USD", effective_from=day, prices=[
                billing.PriceIn(meter="endpoint_requests", unit_price=unit_price,
                                per_quantity=per_quantity)]))
        billing.create_price_list(s, actor=ADMIN, spec=billing.PriceListCreate(
            org_id=org, currency="USD", effective_from=T0, discount_bp=discount_bp))
    start = day + timedelta(hours=2)
    records = [usage(f"{org}-{i}", org=org, resource=f"ep-{org}", meter="endpoint_requests",
                     quantity=q, start=start + timedelta(seconds=i)) for i, q in enumerate(chunks)]
    if at_ingestion:  # the batches are what ingestion gets
        for i in range(0, len(records), batch_size):
            _ingest(db, records[i:i + batch_size])
    else:
        _ingest(db, records, rate=False)
    assert rate_all(db, batch_size=batch_size) == (0 if at_ingestion else len(records))
    with db.engine.connect() as c:
        charged = c.scalar(sa.text("SELECT sum(charge) FROM billing_usage_records "
                                   "WHERE org_id = :o"), {"o": org})
    # The reference computation uses Python's Fraction rounding, not the code under test.
    from fractions import Fraction
    exact = Fraction(sum(chunks) * unit_price * (10_000 - discount_bp), per_quantity * 10_000)
    expected = int(exact) + (1 if exact - int(exact) >= Fraction(1, 2) else 0)
    assert charged == expected
    assert _wallet_balance(db, org) == -expected
    assert ResolvedPrice("p", "USD", unit_price, per_quantity, discount_bp).charge_for(
        sum(chunks)) == expected


def test_two_raters_in_parallel_never_double_charge(db: Database) -> None:
    setup_catalog(db)
    records = [usage(f"u{i}", resource=f"inst_{i % 7}", quantity=1 + i % 13)
               for i in range(600)]
    for i in range(0, 600, 100):
        _ingest(db, records[i:i + 100], rate=False)
    errors: list[BaseException] = []

    def rater() -> None:
        try:
            rate_all(db, batch_size=25)
        except BaseException as exc:  # surfaced by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=rater) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert errors == []
    with db.engine.connect() as c:
        assert c.scalar(sa.text(
            "SELECT count(*) FROM billing_usage_records WHERE state <> 1")) == 0
        n_transfers = c.scalar(sa.text(
            "SELECT count(*) FROM billing_transfers WHERE reason = 'usage'"))
    assert n_transfers == 600
    total_q = sum(r.quantity for r in records)
    # Per stream rounding at 1000 micro/s is exact, so the total is simply 1000 * seconds.
    assert _wallet_balance(db) == -1000 * total_q
    assert_ledger_clean(db)


def test_rate_until_idle_can_wait_for_another_raters_batch(db: Database) -> None:
    """Another rater's open batch holds the only record: on PostgreSQL it is skipped, so a
    plain call returns at once with it unrated; with settle_seconds the call returns only
    once it is rated. On SQLite the other batch holds the write lock, so both calls wait."""
    setup_catalog(db)
    claimed, release = threading.Event(), threading.Event()

    def other_rater() -> None:
        with db.transaction() as s:
            assert billing.rate_batch(s).rated == 1
            claimed.set()
            release.wait(10)

    def waiting() -> int:
        with db.engine.connect() as c:
            return int(c.scalar(sa.text(
                "SELECT count(*) FROM billing_usage_records WHERE state = 0")))

    for settle in (0, 5):
        _ingest(db, [usage(f"u{settle}", quantity=60)], rate=False)
        claimed.clear()
        release.clear()
        other = threading.Thread(target=other_rater)
        other.start()
        assert claimed.wait(10)
        threading.Timer(0.3, release.set).start()
        assert billing.rate_until_idle(db, settle_seconds=settle) == 0
        if settle or db.engine.dialect.name == "sqlite":
            assert waiting() == 0
        else:
            assert waiting() == 1  # what settle_seconds is for
        other.join(10)
        assert waiting() == 0
    assert _wallet_balance(db) == -2 * 60_000
    assert_ledger_clean(db)


@RATED_BY
def test_a_charge_beyond_the_transfer_maximum_is_set_aside_not_a_crash_loop(
        db: Database, at_ingestion: bool) -> None:
    setup_catalog(db)
    with db.transaction() as s:
        billing.create_price_list(s, actor=ADMIN, spec=billing.PriceListCreate(
            org_id=ORG_RICH, currency="USD", effective_from=T0, prices=[
                billing.PriceIn(meter="vcpu_seconds", unit_price=10**15, per_quantity=1)]))
    _ingest(db, [usage("huge", org=ORG_RICH, meter="vcpu_seconds", quantity=10),
                 usage("fine", org=ORG_RICH, quantity=10)], rate=at_ingestion)
    rate_all(db)
    assert _charges(db) == {"huge": None, "fine": 10_000}
    assert_ledger_clean(db)


def _usage_transfers(db: Database) -> dict[str, int]:
    """usage id -> how many usage transfers charge it."""
    with db.engine.connect() as c:
        return dict(c.execute(sa.text(
            "SELECT usage_id, count(*) FROM billing_transfers WHERE reason = 'usage' "
            "GROUP BY usage_id")).all())


@RATED_BY
def test_a_replayed_batch_is_stored_and_charged_once(db: Database, at_ingestion: bool) -> None:
    """A replay (the same key and payload, in the batch or later) is a duplicate, however the
    first copy was rated; a key with another payload is refused and writes nothing."""
    setup_catalog(db)
    batch = [usage(f"u{i}", resource=f"inst_{i % 2}", quantity=7 + i) for i in range(5)]
    first = _ingest(db, [*batch, batch[0]], rate=at_ingestion)
    assert (first.accepted, first.duplicates) == (5, 1) and first.ids[5] == first.ids[0]
    rate_all(db)
    again = _ingest(db, batch[::-1])
    assert (again.accepted, again.duplicates) == (0, 5) and again.ids == first.ids[4::-1]
    with pytest.raises(Conflict):
        _ingest(db, [usage("new"), usage("u3", resource="inst_1", quantity=99)])
    assert rate_all(db) == 0
    assert _usage_transfers(db) == dict.fromkeys(first.ids[:5], 1)
    assert _wallet_balance(db) == -1000 * sum(r.quantity for r in batch)
    assert_ledger_clean(db)


@pytest.mark.parametrize("failing", ["decide", "post_transfer_columns", "evaluate_budgets"])
def test_usage_whose_rating_fails_at_ingestion_is_stored_waiting(
        db: Database, monkeypatch: pytest.MonkeyPatch, failing: str) -> None:
    """Rating at ingestion fails at any step (here after a failed statement, which on
    PostgreSQL aborts the transaction): nothing of the rating stays, the usage is stored
    waiting, and the rater charges it later."""
    from aicloud.platform.billing import rating

    def fail(session: object, *args: object, **kwargs: object) -> None:
        with contextlib.suppress(sa.exc.DBAPIError):
            session.execute(sa.text("SELECT CAST('x' AS INTEGER) + 1/0"))  # type: ignore[attr-defined]
        raise RuntimeError("rating broke")

    setup_catalog(db)
    monkeypatch.setattr(rating, failing, fail)
    result = _ingest(db, [usage("a", quantity=10), usage("b", resource="inst_2", quantity=20)])
    assert result.accepted == 2
    monkeypatch.undo()
    with db.engine.connect() as c:
        assert c.execute(sa.text(
            "SELECT (SELECT count(*) FROM billing_usage_records WHERE state = 0), "
            "(SELECT count(*) FROM billing_transfers), "
            "(SELECT count(*) FROM billing_rating_streams)")).one() == (2, 0, 0)
    assert rate_all(db) == 2
    assert _usage_transfers(db) == dict.fromkeys(result.ids, 1)
    assert _wallet_balance(db) == -30_000
    assert_ledger_clean(db)


def test_ingesters_and_a_rater_at_once_charge_every_record_once_and_round_exactly(
        db: Database) -> None:
    """Several ingesters rate batches over the same resources while records stored unrated
    are rated beside them. 1 micro-unit per 3 requests: each resource's charges must sum to
    its total rounded once, which only holds if no two transactions rated one stream at
    the same time (on PostgreSQL they run in parallel; SQLite serializes them)."""
    setup_catalog(db)
    rng = random.Random(7)
    batches = [[usage(f"b{b}-{i}", resource=f"ep_{rng.randrange(5)}", meter="endpoint_requests",
                      quantity=rng.randrange(1, 50)) for i in range(40)] for b in range(24)]
    errors: list[BaseException] = []

    def ingester(mine: list[list[billing.UsageIn]], rate: bool) -> None:
        try:
            for batch in mine:
                _ingest(db, batch, rate=rate)
            _ingest(db, mine[0], rate=rate)  # a replay, while the others still run
        except BaseException as exc:  # surfaced by the assertion below
            errors.append(exc)

    def rater() -> None:
        try:
            for _ in range(20):
                rate_all(db, batch_size=15)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=ingester, args=(batches[k::4], k != 3))
               for k in range(4)] + [threading.Thread(target=rater)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert errors == []
    rate_all(db)
    sent: dict[str, int] = {}
    for r in (r for batch in batches for r in batch):
        sent[r.resource_id] = sent.get(r.resource_id, 0) + r.quantity
    with db.engine.connect() as c:
        assert c.scalar(sa.text(
            "SELECT count(*) FROM billing_usage_records WHERE state <> 1")) == 0
        charged = dict(c.execute(sa.text(
            "SELECT resource_id, sum(charge) FROM billing_usage_records "
            "GROUP BY resource_id")).all())
    assert charged == {r: (2 * q + 3) // 6 for r, q in sent.items()}
    assert len(_usage_transfers(db)) <= 24 * 40
    assert set(_usage_transfers(db).values()) == {1}
    assert _wallet_balance(db) == -sum(charged.values())
    assert_ledger_clean(db)


def test_a_batch_over_more_resources_than_a_rating_locks_is_left_to_the_rater(
        db: Database, monkeypatch: pytest.MonkeyPatch) -> None:
    """Rating locks each resource of the batch; a batch touching more of them than one
    transaction should lock is stored waiting, and the rater rates it in its own batches."""
    from aicloud.platform.billing import rating

    setup_catalog(db)
    monkeypatch.setattr(rating, "MAX_LOCKED_RESOURCES", 2)
    _ingest(db, [usage("a", resource="inst_1"), usage("b", resource="inst_2"),
                 usage("c", resource="inst_1")])  # two resources: rated at once
    assert rate_all(db) == 0
    big = _ingest(db, [usage(f"r{i}", resource=f"inst_{i}") for i in range(3)])
    assert rate_all(db, batch_size=2) == 3
    assert _usage_transfers(db).keys() >= set(big.ids)
    assert_ledger_clean(db)
