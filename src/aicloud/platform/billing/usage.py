"""Usage ingestion: batches of records, idempotent per record key, rated as they are stored."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from datetime import datetime, timedelta
from operator import attrgetter, le
from typing import Any, NamedTuple

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from aicloud.platform import audit
from aicloud.platform.billing import rating
from aicloud.platform.billing.models import RATED, WAITING, MeterModel, UsageRecordModel
from aicloud.platform.billing.money import MAX_QUANTITY
from aicloud.platform.billing.schemas import IngestResult, UsageIn
from aicloud.platform.billing.scopes import resolve_scopes, split_scope
from aicloud.shared.clock import utcnow
from aicloud.shared.db import bulk
from aicloud.shared.errors import Conflict, ValidationFailed
from aicloud.shared.ids import new_ids

log = logging.getLogger(__name__)

MAX_BATCH = 10_000
# Usage cannot end in the future; this much clock skew between a reporter and us is allowed.
# A window from next month would be charged now yet count for no budget this month.
MAX_CLOCK_SKEW = timedelta(minutes=5)
_KEY_CHUNK = 500


def _validate(r: UsageIn, meters: dict[str, str | None], i: int, latest: datetime) -> None:
    where = f"record {i} ({r.idempotency_key})"
    if r.meter not in meters:
        raise ValidationFailed(f"{where}: unknown meter {r.meter!r}", field="meter")
    if meters[r.meter] and not r.dimension_value:
        raise ValidationFailed(f"{where}: meter {r.meter} needs a {meters[r.meter]} value",
                               field="dimension_value")
    if type(r.quantity) is not int or not 0 < r.quantity <= MAX_QUANTITY:
        raise ValidationFailed(f"{where}: quantity must be 1..{MAX_QUANTITY}", field="quantity")
    for name in ("window_start", "window_end"):
        if getattr(r, name).tzinfo is None:
            raise ValidationFailed(f"{where}: {name} must carry a time zone", field=name)
    if r.window_end <= r.window_start:
        raise ValidationFailed(f"{where}: window_end must be after window_start",
                               field="window_end")
    if r.window_end > latest:
        raise ValidationFailed(f"{where}: window_end is in the future (usage is reported "
                               "after it happens)", field="window_end")
    try:
        parts = split_scope(r.scope_path)
    except ValidationFailed as exc:
        raise ValidationFailed(f"{where}: {exc.detail}", field="scope_path") from None
    if parts[-1] != r.project_id:
        raise ValidationFailed(f"{where}: scope_path must end with the project id",
                               field="scope_path")


# UsageIn fields in the order their columns are read; the stored row adds id, org_id,
# fingerprint, received_at and state.
_FIELDS = ("idempotency_key", "resource_id", "project_id", "scope_path", "principal_id",
           "meter", "dimension_value", "quantity", "window_start", "window_end", "source")


def _validated_orgs(records: Sequence[UsageIn], columns: dict[str, list[Any]],
                    meters: dict[str, str | None], latest: datetime) -> list[str]:
    """Each record's organization, after checking _validate's rules column by column
    (set and map operations instead of a loop over thousands of records); on any doubt
    _validate names the first bad record."""
    meter_col, quantities = columns["meter"], columns["quantity"]
    starts, ends = columns["window_start"], columns["window_end"]
    needs_dimension = {m for m, d in meters.items() if d}
    orgs_by_scope: dict[tuple[str, str], str | None] = {}
    for scope_path, project_id in set(zip(columns["scope_path"], columns["project_id"],
                                          strict=True)):
        try:
            parts = split_scope(scope_path)
        except ValidationFailed:
            parts = []
        orgs_by_scope[(scope_path, project_id)] = (
            parts[0] if parts and parts[-1] == project_id else None)
    ok = (set(meter_col) <= meters.keys()
          and not (needs_dimension and any(
              m in needs_dimension and not d
              for m, d in zip(meter_col, columns["dimension_value"], strict=True)))
          and set(map(type, quantities)) == {int} and min(quantities) > 0
          and max(quantities) <= MAX_QUANTITY
          and None not in {w.tzinfo for w in starts} and None not in {w.tzinfo for w in ends}
          and not any(map(le, ends, starts)) and max(ends) <= latest
          and None not in orgs_by_scope.values())
    if not ok:
        for i, r in enumerate(records):
            _validate(r, meters, i, latest)
        raise ValidationFailed("the usage batch breaks a rule no single record breaks")
    return [orgs_by_scope[pair]  # type: ignore[misc]
            for pair in zip(columns["scope_path"], columns["project_id"], strict=True)]


def _fingerprints(columns: dict[str, list[Any]]) -> list[str]:
    """Each record's payload fingerprint: SHA-256 of every field but the key, joined by
    U+001F (datetimes in isoformat), computed column by column. The format must not change:
    stored fingerprints are compared with new ones."""
    payloads = map("\x1f".join, zip(
        columns["resource_id"], columns["project_id"], columns["scope_path"],
        [p or "" for p in columns["principal_id"]], columns["meter"],
        columns["dimension_value"], map(str, columns["quantity"]),
        map(datetime.isoformat, columns["window_start"]),
        map(datetime.isoformat, columns["window_end"]), columns["source"], strict=True))
    return [hashlib.sha256(p.encode()).hexdigest() for p in payloads]


def ingest_usage(session: Session, records: Sequence[UsageIn], *, actor: audit.Actor,
                 now: datetime | None = None, rate: bool = True) -> IngestResult:
    """Store a batch of usage records. A key seen before with the same payload is a duplicate
    (accepted once); with a different payload the whole batch is refused with Conflict.

    With ``rate`` (the default) the new records are rated in this transaction and stored
    rated, their charges posted beside them (see rating.py); if rating them fails they are
    stored waiting for the rater instead. Without, they all wait for the rater."""
    if not records:
        return IngestResult(accepted=0, duplicates=0, ids=[])
    if len(records) > MAX_BATCH:
        raise ValidationFailed(f"at most {MAX_BATCH} usage records per batch")
    now = now or utcnow()
    meters = dict(session.execute(select(MeterModel.name, MeterModel.dimension)).all())
    columns = dict(zip(_FIELDS, map(list, zip(*map(attrgetter(*_FIELDS), records),
                                               strict=True)), strict=True))
    orgs = _validated_orgs(records, columns, meters, now + MAX_CLOCK_SKEW)
    # Well formed is not enough: each distinct path must be where IAM has its project.
    resolve_scopes(session, columns["scope_path"])
    fingerprints = _fingerprints(columns)
    keys = columns["idempotency_key"]
    first: dict[str, int] = {}  # key -> index of its first record in the batch
    for i, key in enumerate(keys):
        j = first.setdefault(key, i)
        if j != i and fingerprints[j] != fingerprints[i]:
            raise Conflict(f"usage key {key!r} appears twice with different payloads",
                           idempotency_key=key)
    columns["fingerprint"], columns["org_id"] = fingerprints, orgs
    if rate and len(set(columns["resource_id"])) > rating.MAX_LOCKED_RESOURCES:
        rate = False  # more resources than one transaction should lock: the rater's batches
    if len(first) == len(keys):
        # Optimistic, as the ledger posts: batches are nearly always all new. Insert them in
        # a savepoint; if no key clashed there was no duplicate, and the look-up of every
        # key is saved. Otherwise undo it and take the careful path below.
        ids = _insert(session, columns, now, rate=rate, optimistic=True)
        if ids is not None:
            _audit(session, actor, ids, len(records))
            return IngestResult(accepted=len(ids), duplicates=0, ids=ids)
    existing: dict[str, tuple[str, str]] = {}
    unique_keys = list(first)
    for j in range(0, len(unique_keys), _KEY_CHUNK):
        for key, uid, fp in session.execute(select(
                UsageRecordModel.idempotency_key, UsageRecordModel.id,
                UsageRecordModel.fingerprint).where(
                bulk.in_values(UsageRecordModel.idempotency_key, "keys")),
                {"keys": unique_keys[j:j + _KEY_CHUNK]}):
            if existing.setdefault(key, (uid, fp))[1] != fingerprints[first[key]]:
                raise Conflict(f"usage key {key!r} was already ingested with a different "
                               "payload", idempotency_key=key, usage_id=uid)
    fresh = [i for i in first.values() if keys[i] not in existing]
    if len(fresh) != len(records):  # duplicates: keep each new key's first record only
        columns = {name: [values[i] for i in fresh] for name, values in columns.items()}
    ids = _insert(session, columns, now, rate=rate, optimistic=False) or []
    if ids:
        _audit(session, actor, ids, len(records))
    stored = dict(zip(columns["idempotency_key"], ids, strict=True))
    return IngestResult(accepted=len(ids), duplicates=len(records) - len(ids),
                        ids=[stored[k] if k in stored else existing[k][0] for k in keys])


class _Usage(NamedTuple):
    """What rating reads of a record (a claimed row has the same attributes)."""

    id: str
    resource_id: str
    org_id: str
    scope_path: str
    meter: str
    dimension_value: str
    quantity: int
    window_start: datetime


class _RatingFailed(Exception):
    """Rating a batch at ingestion failed; its savepoint was rolled back."""


def _insert(session: Session, columns: dict[str, list[Any]], now: datetime, *, rate: bool,
            optimistic: bool) -> list[str] | None:
    """Insert the records (as columns), rated when ``rate``; their ids. On a unique clash:
    None when ``optimistic`` (the caller looks the keys up), else a Conflict (another
    ingestion stored some of the keys after the look-up)."""
    n = len(columns["idempotency_key"])
    if not n:
        return []
    row = {**columns, "id": new_ids("usage", n), "received_at": [now] * n}
    if rate:
        try:
            return _insert_rated(session, row, now, optimistic=optimistic)
        except _RatingFailed:
            # The usage is what must not be lost: stored waiting, the rater charges it (and
            # fails loudly again if the cause is still there).
            log.exception("rating %d usage record(s) at ingestion failed; they are stored "
                          "waiting for the rater", n)
    row["state"] = [WAITING] * n
    savepoint = session.begin_nested()
    try:
        bulk.insert_columns(session.connection(), UsageRecordModel.__table__, row)
    except IntegrityError:
        savepoint.rollback()
        return _clash(optimistic)
    savepoint.commit()
    return row["id"]  # type: ignore[no-any-return]


def _insert_rated(session: Session, row: dict[str, list[Any]], now: datetime, *,
                  optimistic: bool) -> list[str] | None:
    """_insert with the records rated: stored with their rated state, their charges and
    stream totals posted and budgets judged, all in one savepoint. _RatingFailed, having
    written nothing, if rating them failed."""
    savepoint = session.begin_nested()
    try:
        # In the savepoint: a lock taken there ends if it is rolled back (no lock is held
        # for the rest of the transaction by a rating that did not happen).
        rating.lock_resources(session, set(row["resource_id"]))
        outcome = rating.decide(session, list(map(_Usage._make, zip(
            *(row[f] for f in _Usage._fields), strict=True))))
    except Exception as exc:
        savepoint.rollback()
        raise _RatingFailed from exc
    rated = {**row, "state": outcome.state, "stream_id": outcome.stream_id,
             "price_id": outcome.price_id, "currency": outcome.currency,
             "charge": outcome.charge,
             "rated_at": [now if s == RATED else None for s in outcome.state]}
    try:
        bulk.insert_columns(session.connection(), UsageRecordModel.__table__, rated)
    except IntegrityError:
        savepoint.rollback()
        return _clash(optimistic)
    try:
        transfers = rating.post(session, outcome, now)
        rating.judge_budgets(session, outcome, now)
    except Exception as exc:
        savepoint.rollback()
        raise _RatingFailed from exc
    savepoint.commit()
    audit.record(session, actor=rating.RATER, action="billing.usage.rate",
                 target_type="usage_batch", target_id=row["id"][0],
                 details={"rated": outcome.state.count(RATED), "unpriced": outcome.unpriced,
                          "charged": outcome.total, "transfers": transfers})
    return row["id"]  # type: ignore[no-any-return]


def _clash(optimistic: bool) -> None:
    if optimistic:
        return None
    raise Conflict("another ingestion stored some of these keys at the same moment; "
                   "retry the batch (duplicates will be recognised)")


def _audit(session: Session, actor: audit.Actor, ids: list[str], received: int) -> None:
    audit.record(session, actor=actor, action="billing.usage.ingest",
                 target_type="usage_batch", target_id=ids[0],
                 details={"accepted": len(ids), "duplicates": received - len(ids)})
