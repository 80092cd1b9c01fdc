"""Rating: turn waiting usage records into charges, a batch per transaction.

Safe to run in several processes and to kill at any instant:
- a batch is one transaction: the charges, the stream totals, the balance cache and the
  records' "rated" state commit together or not at all;
- on PostgreSQL, records are claimed with FOR UPDATE SKIP LOCKED, and a transaction-scoped
  advisory lock per resource (taken in sorted order) serializes the stream totals of one
  resource across raters without deadlocks; SQLite serializes writers already;
- each charge transfer's idempotency key is ``usage:<usage id>`` and usage_id is unique in
  the ledger, so even a bug in the claim logic could not charge a record twice.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, func, literal_column, select, text, update
from sqlalchemy.orm import Session

from aicloud.platform import audit
from aicloud.platform.billing.budgets import evaluate_budgets
from aicloud.platform.billing.catalog import PriceBook, ResolvedPrice
from aicloud.platform.billing.ledger import (
    TransferSpec,
    org_wallet,
    platform_account,
    post_transfers,
)
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
from aicloud.shared.ids import int64_key, new_id

log = logging.getLogger(__name__)

ADVISORY_NAMESPACE = 0x6269_6C6C  # "bill"
RATER = audit.Actor.system("billing-rater")

StreamKey = tuple[str, str, str, str, int]


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


def _lock_resources(session: Session, resource_ids: set[str]) -> None:
    if session.get_bind().dialect.name != "postgresql":
        return
    keys = sorted({_advisory_key(r) for r in resource_ids})
    session.execute(text(
        "SELECT count(pg_advisory_xact_lock(k)) FROM "
        "(SELECT k FROM unnest(CAST(:keys AS bigint[])) WITH ORDINALITY AS t(k, n) "
        "ORDER BY n) AS ordered"), {"keys": keys})


def _load_streams(session: Session, keys: set[StreamKey]) -> dict[StreamKey, dict]:  # type: ignore[type-arg]
    S = RatingStreamModel
    found: dict[StreamKey, dict] = {}  # type: ignore[type-arg]
    resources = sorted({k[0] for k in keys})
    for i in range(0, len(resources), 500):
        for row in session.connection().execute(select(
                S.id, S.resource_id, S.meter, S.dimension_value, S.price_id, S.discount_bp,
                S.quantity, S.charged).where(
                bulk.in_values(S.resource_id, "r")),
                {"r": resources[i:i + 500]}):
            key = (row.resource_id, row.meter, row.dimension_value, row.price_id,
                   row.discount_bp)
            if key in keys:
                found[key] = {"id": row.id, "quantity": row.quantity, "charged": row.charged,
                              "new": False}
    for key in keys - found.keys():
        found[key] = {"id": new_id("strm"), "quantity": 0, "charged": 0, "new": True}
    return found


def rate_batch(session: Session, *, batch_size: int = 2000,
               now: datetime | None = None) -> RateResult:
    """Rate up to ``batch_size`` waiting records in the caller's transaction."""
    now = now or utcnow()
    claimed = _claim(session, batch_size)
    if not claimed:
        return RateResult(rated=0, charged=0, transfers=0)
    _lock_resources(session, {r.resource_id for r in claimed})
    book = PriceBook(session)
    priced: list[tuple[object, ResolvedPrice, StreamKey]] = []
    unpriced: list[int] = []
    for r in claimed:
        try:
            price = book.resolve(r.org_id, r.meter, r.dimension_value, r.window_start)
        except AppError as exc:
            log.warning("usage %s cannot be rated: %s", r.id, exc.detail)
            unpriced.append(r.seq)
            continue
        priced.append((r, price, (r.resource_id, r.meter, r.dimension_value, price.price_id,
                                  price.discount_bp)))
    streams = _load_streams(session, {k for _, _, k in priced})
    wallets: dict[tuple[str, str], str] = {}
    revenue: dict[str, str] = {}
    specs: list[TransferSpec] = []
    # Columns of the rated records' new state, one value per record.
    rated: dict[str, list[Any]] = {c: [] for c in ("seq", "stream_id", "price_id", "currency",
                                                   "charge")}
    seqs, stream_ids, price_ids = rated["seq"], rated["stream_id"], rated["price_id"]
    currencies, charges = rated["currency"], rated["charge"]
    total = 0
    charged_scopes: set[str] = set()
    for r, price, key in priced:
        s = streams[key]
        quantity = s["quantity"] + r.quantity  # type: ignore[attr-defined]
        # Cumulative rounding: charge what rounds the stream's total, minus what was charged.
        target = price.charge_for(quantity)
        charge = target - s["charged"]
        if charge > MAX_AMOUNT:
            log.warning("usage %s would charge %d, above the per-transfer maximum; left "
                        "unpriced for an operator", r.id, charge)  # type: ignore[attr-defined]
            unpriced.append(r.seq)  # type: ignore[attr-defined]
            continue
        s["quantity"], s["charged"], s["dirty"] = quantity, target, True
        if charge:
            wkey = (r.org_id, price.currency)  # type: ignore[attr-defined]
            if wkey not in wallets:
                wallets[wkey] = org_wallet(session, *wkey).id
            if price.currency not in revenue:
                revenue[price.currency] = platform_account(session, "revenue", price.currency).id
            specs.append(TransferSpec(
                debit_account_id=wallets[wkey], credit_account_id=revenue[price.currency],
                amount=charge, currency=price.currency,
                idempotency_key=f"usage:{r.id}", reason="usage",  # type: ignore[attr-defined]
                usage_id=r.id, cause_type="usage", cause_id=r.id))  # type: ignore[attr-defined]
            total += charge
            charged_scopes.add(r.scope_path)  # type: ignore[attr-defined]
        seqs.append(r.seq)  # type: ignore[attr-defined]
        stream_ids.append(s["id"])
        price_ids.append(price.price_id)
        currencies.append(price.currency)
        charges.append(charge)
    new_streams = [{"id": s["id"], "resource_id": k[0], "meter": k[1], "dimension_value": k[2],
                    "price_id": k[3], "discount_bp": k[4], "quantity": s["quantity"],
                    "charged": s["charged"]}
                   for k, s in streams.items() if s["new"] and s.get("dirty")]
    old_streams = [{"id": s["id"], "quantity": s["quantity"], "charged": s["charged"]}
                   for s in streams.values() if not s["new"] and s.get("dirty")]
    conn = session.connection()
    bulk.insert_rows(conn, RatingStreamModel.__table__, new_streams)
    bulk.update_rows(conn, RatingStreamModel.__table__, "id", old_streams)
    # Rating charges always post: the usage already happened. Admission (holds, budgets)
    # is where spending is stopped, not here.
    post_transfers(session, specs, enforce_floor=False, check_replays=False, now=now)
    bulk.update_columns(conn, UsageRecordModel.__table__, "seq", rated, state=RATED,
                        rated_at=now)
    bulk.update_rows(conn, UsageRecordModel.__table__, "seq",
                     [{"seq": seq} for seq in unpriced], state=UNPRICED)
    # Budgets are judged on the spend just posted, in this transaction: an exhausted budget
    # is announced when the charge that exhausts it commits, not a poll interval later.
    evaluate_budgets(session, now=now, scope_paths=charged_scopes)
    audit.record(session, actor=RATER, action="billing.usage.rate", target_type="usage_batch",
                 target_id=claimed[0].id,
                 details={"rated": len(seqs), "unpriced": len(unpriced), "charged": total,
                          "transfers": len(specs), "first_seq": claimed[0].seq,
                          "last_seq": claimed[-1].seq})
    return RateResult(rated=len(seqs), charged=total, transfers=len(specs))


def requeue_unpriced(session: Session, *, actor: audit.Actor) -> int:
    """After adding the missing prices, put records that could not be priced back in line."""
    U = UsageRecordModel
    n = session.execute(update(U).where(_in_state(UNPRICED)).values(state=WAITING)).rowcount
    if n:
        audit.record(session, actor=actor, action="billing.usage.requeue",
                     target_type="usage_batch", target_id="unpriced", details={"count": n})
    return int(n or 0)
