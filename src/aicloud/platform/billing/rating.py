"""Rating: usage records become charges.

Two callers share one procedure (``lock_resources``, ``decide``, then ``post`` and
``judge_budgets`` around writing the records' rated state):
- ingestion rates a batch as it stores it (usage.ingest_usage): the records are inserted
  already rated, in the transaction that posts their charges, so a record is written once;
- the rater controller (``rate_batch``) rates what waits: records stored unrated (ingestion
  asked not to rate, its rating failed, or the batch touched more resources than one
  transaction locks) and unpriced records requeued after a price was added, claiming them a
  batch per transaction.

Safe to run in several processes and to kill at any instant:
- one transaction holds the charges, the stream totals, the balance cache, the budget alerts
  and the records' rated state: they commit together or not at all;
- on PostgreSQL a transaction-scoped advisory lock per resource (taken in sorted order)
  serializes the stream totals of one resource across raters and ingesters without
  deadlocks, and the rater claims records with FOR UPDATE SKIP LOCKED; SQLite serializes
  writers already;
- each charge transfer's idempotency key is ``usage:<usage id>`` and usage_id is unique in
  the ledger, so even a bug in the claim logic could not charge a record twice.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Select, func, literal_column, select, text, update
from sqlalchemy.orm import Session

from aicloud.platform import audit
from aicloud.platform.billing.budgets import evaluate_budgets
from aicloud.platform.billing.catalog import PriceBook, ResolvedPrice
from aicloud.platform.billing.ledger import charge_accounts, post_transfer_columns
from aicloud.platform.billing.models import (
    RATED,
    UNPRICED,
    WAITING,
    RatingStreamModel,
    UsageRecordModel,
)
from aicloud.platform.billing.money import MAX_AMOUNT
from aicloud.platform.billing.schemas import RateResult
from aicloud.shared.clock import utcnow
from aicloud.shared.db import bulk
from aicloud.shared.errors import AppError
from aicloud.shared.ids import int64_key, new_ids

log = logging.getLogger(__name__)

ADVISORY_NAMESPACE = 0x6269_6C6C  # "bill"
RATER = audit.Actor.system("billing-rater")

StreamKey = tuple[str, str, str, str, int]

# The most resources one transaction rates, so the most advisory locks it takes (PostgreSQL
# keeps them in a lock table all sessions share, max_locks_per_transaction x max_connections
# entries): the rater's batch, and the most a batch of usage may touch to be rated as it is
# ingested (a larger one is left to the rater).
MAX_LOCKED_RESOURCES = 2000


@functools.lru_cache(maxsize=65536)
def _advisory_key(resource_id: str) -> int:
    return int64_key(resource_id) ^ ADVISORY_NAMESPACE


def _in_state(state: int) -> ColumnElement[bool]:
    """``state = <literal>``: a bound parameter would not match the partial index of that
    state (SQLite never, PostgreSQL not in a generic plan)."""
    return UsageRecordModel.state == literal_column(str(int(state)))


def _claim(session: Session, batch_size: int) -> list:  # type: ignore[type-arg]
    U = UsageRecordModel
    stmt = (select(U.seq, U.id, U.resource_id, U.org_id, U.scope_path, U.meter,
                   U.dimension_value, U.quantity, U.window_start)
            .where(_in_state(WAITING)).order_by(U.seq).limit(batch_size))
    if session.get_bind().dialect.name == "postgresql":
        stmt = stmt.with_for_update(skip_locked=True, of=U)
    return list(session.connection().execute(stmt).all())


def count_waiting(session: Session) -> int:
    """Records not rated yet, including those another rater has claimed but not committed."""
    U = UsageRecordModel
    return int(session.scalar(select(func.count()).select_from(U).where(_in_state(WAITING)))
               or 0)


def lock_resources(session: Session, resource_ids: set[str]) -> None:
    """Serialize the stream totals of these resources with every other rater or ingester
    until the transaction ends (PostgreSQL; SQLite serializes writers already)."""
    if session.get_bind().dialect.name != "postgresql":
        return
    keys = sorted(set(map(_advisory_key, resource_ids)))
    session.execute(text(
        "SELECT count(pg_advisory_xact_lock(k)) FROM "
        "(SELECT k FROM unnest(CAST(:keys AS bigint[])) WITH ORDINALITY AS t(k, n) "
        "ORDER BY n) AS ordered"), {"keys": keys})


def _streams_statement() -> Select[Any]:
    S = RatingStreamModel
    return select(S.resource_id, S.meter, S.dimension_value, S.price_id, S.discount_bp, S.id,
                  S.quantity, S.charged).where(bulk.in_values(S.resource_id, "r"))


# Built once: a batch reads its streams with it, and building it cost more than running it.
_STREAMS = _streams_statement()
_RESOURCES_PER_READ = 5000  # within SQLite's limit of bound parameters


def _load_streams(session: Session, keys: set[StreamKey]) -> dict[StreamKey, dict]:  # type: ignore[type-arg]
    found: dict[StreamKey, dict] = {}  # type: ignore[type-arg]
    resources = sorted({k[0] for k in keys})
    conn = session.connection()
    for i in range(0, len(resources), _RESOURCES_PER_READ):
        for resource, meter, dimension, price, discount, stream_id, quantity, charged in \
                conn.execute(_STREAMS, {"r": resources[i:i + _RESOURCES_PER_READ]}):
            key = (resource, meter, dimension, price, discount)
            if key in keys:
                found[key] = {"id": stream_id, "quantity": quantity, "charged": charged,
                              "new": False}
    missing = keys - found.keys()
    for key, stream_id in zip(missing, new_ids("strm", len(missing)), strict=True):
        found[key] = {"id": stream_id, "quantity": 0, "charged": 0, "new": True}
    return found


class Rating:
    """What rating decided for a list of usage records, before anything is written: the
    columns of their rated state (one value per record, in order), the stream totals that
    change and the charges to post."""

    def __init__(self, n: int):
        self.state: list[int] = [RATED] * n
        self.stream_id: list[str | None] = [None] * n
        self.price_id: list[str | None] = [None] * n
        self.currency: list[str | None] = [None] * n
        self.charge: list[int | None] = [None] * n
        self.streams: dict[StreamKey, dict] = {}  # type: ignore[type-arg]
        # (usage id, org, scope path, amount, currency) of each non-zero charge
        self.charges: list[tuple[str, str, str, int, str]] = []

    @property
    def unpriced(self) -> int:
        return self.state.count(UNPRICED)

    @property
    def total(self) -> int:
        return sum(c[3] for c in self.charges)


def decide(session: Session, records: Sequence[Any]) -> Rating:
    """Price each record (anything with a usage record's id, resource_id, org_id,
    scope_path, meter, dimension_value, quantity and window_start) and charge it against its
    stream's running total. Reads only: the caller holds the resources' locks
    (``lock_resources``) and then writes the outcome with ``post``."""
    out = Rating(len(records))
    state, stream_ids, price_ids = out.state, out.stream_id, out.price_id
    currencies, charges = out.currency, out.charge
    book = PriceBook(session)
    priced: list[tuple[int, Any, ResolvedPrice, StreamKey]] = []
    for i, r in enumerate(records):
        try:
            price = book.resolve(r.org_id, r.meter, r.dimension_value, r.window_start)
        except AppError as exc:
            log.warning("usage %s cannot be rated: %s", r.id, exc.detail)
            state[i] = UNPRICED
            continue
        priced.append((i, r, price, (r.resource_id, r.meter, r.dimension_value,
                                     price.price_id, price.discount_bp)))
    streams = out.streams = _load_streams(session, {k for *_, k in priced})
    for i, r, price, key in priced:
        s = streams[key]
        quantity = s["quantity"] + r.quantity
        # Cumulative rounding: charge what rounds the stream's total, minus what was charged.
        target = price.charge_for(quantity)
        charge = target - s["charged"]
        if charge > MAX_AMOUNT:
            log.warning("usage %s would charge %d, above the per-transfer maximum; left "
                        "unpriced for an operator", r.id, charge)
            state[i] = UNPRICED
            continue
        s["quantity"], s["charged"], s["dirty"] = quantity, target, True
        if charge:
            out.charges.append((r.id, r.org_id, r.scope_path, charge, price.currency))
        stream_ids[i], price_ids[i] = s["id"], price.price_id
        currencies[i], charges[i] = price.currency, charge
    return out


def post(session: Session, rating: Rating, now: datetime) -> int:
    """Write what ``decide`` decided, once the records' rated state is written or being
    written in this transaction: the stream totals and the charge transfers (the balance
    cache with them). The number of transfers."""
    new_streams = [{"id": s["id"], "resource_id": k[0], "meter": k[1], "dimension_value": k[2],
                    "price_id": k[3], "discount_bp": k[4], "quantity": s["quantity"],
                    "charged": s["charged"]}
                   for k, s in rating.streams.items() if s["new"] and s.get("dirty")]
    old_streams = [{"id": s["id"], "quantity": s["quantity"], "charged": s["charged"]}
                   for s in rating.streams.values() if not s["new"] and s.get("dirty")]
    conn = session.connection()
    bulk.insert_rows(conn, RatingStreamModel.__table__, new_streams)
    bulk.update_rows(conn, RatingStreamModel.__table__, "id", old_streams)
    n = len(rating.charges)
    if not n:
        return 0
    usage_ids, orgs, _, amounts, currencies = map(list, zip(*rating.charges, strict=True))
    wallets, revenue = charge_accounts(session, set(zip(orgs, currencies, strict=True)))
    # Rating charges always post: the usage already happened. Admission (holds, budgets)
    # is where spending is stopped, not here.
    post_transfer_columns(session, {
        "debit_account_id": [wallets[p] for p in zip(orgs, currencies, strict=True)],
        "credit_account_id": [revenue[c] for c in currencies], "amount": amounts,
        "currency": currencies, "idempotency_key": [f"usage:{u}" for u in usage_ids],
        "reason": ["usage"] * n, "usage_id": usage_ids, "hold_id": [None] * n,
        "cause_type": ["usage"] * n, "cause_id": usage_ids,
        "reverses_transfer_id": [None] * n, "metadata_json": [None] * n},
        enforce_floor=False, check_replays=False, now=now)
    return n


def judge_budgets(session: Session, rating: Rating, now: datetime) -> None:
    """Budgets are judged on the spend just posted, in this transaction, once the records
    carry their charges: an exhausted budget is announced when the charge that exhausts it
    commits, not a poll interval later."""
    evaluate_budgets(session, now=now, scope_paths={c[2] for c in rating.charges})


def rate_batch(session: Session, *, batch_size: int = MAX_LOCKED_RESOURCES,
               now: datetime | None = None) -> RateResult:
    """Rate up to ``batch_size`` waiting records in the caller's transaction."""
    now = now or utcnow()
    claimed = _claim(session, batch_size)
    if not claimed:
        return RateResult(rated=0, charged=0, transfers=0)
    lock_resources(session, {r.resource_id for r in claimed})
    rating = decide(session, claimed)
    transfers = post(session, rating, now)
    conn = session.connection()
    seqs = [r.seq for r in claimed]
    rated = [i for i, state in enumerate(rating.state) if state == RATED]
    bulk.update_columns(conn, UsageRecordModel.__table__, "seq", {
        "seq": [seqs[i] for i in rated],
        **{c: [getattr(rating, c)[i] for i in rated]
           for c in ("stream_id", "price_id", "currency", "charge")}},
        state=RATED, rated_at=now)
    bulk.update_rows(conn, UsageRecordModel.__table__, "seq",
                     [{"seq": seqs[i]} for i, state in enumerate(rating.state)
                      if state == UNPRICED], state=UNPRICED)
    judge_budgets(session, rating, now)
    audit.record(session, actor=RATER, action="billing.usage.rate", target_type="usage_batch",
                 target_id=claimed[0].id,
                 details={"rated": len(rated), "unpriced": rating.unpriced,
                          "charged": rating.total, "transfers": transfers,
                          "first_seq": claimed[0].seq, "last_seq": claimed[-1].seq})
    return RateResult(rated=len(rated), charged=rating.total, transfers=transfers)


def requeue_unpriced(session: Session, *, actor: audit.Actor) -> int:
    """After adding the missing prices, put records that could not be priced back in line."""
    U = UsageRecordModel
    n = session.execute(update(U).where(_in_state(UNPRICED)).values(state=WAITING)).rowcount
    if n:
        audit.record(session, actor=actor, action="billing.usage.requeue",
                     target_type="usage_batch", target_id="unpriced", details={"count": n})
    return int(n or 0)
