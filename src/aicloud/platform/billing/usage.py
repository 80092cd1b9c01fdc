"""Usage ingestion: batches of records, idempotent per record key, set-based inserts."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from aicloud.platform import audit
from aicloud.platform.billing.models import MeterModel, UsageRecordModel
from aicloud.platform.billing.money import MAX_QUANTITY
from aicloud.platform.billing.schemas import IngestResult, UsageIn
from aicloud.platform.billing.scopes import split_scope
from aicloud.shared.clock import utcnow
from aicloud.shared.db import bulk
from aicloud.shared.errors import Conflict, ValidationFailed
from aicloud.shared.ids import new_ids

MAX_BATCH = 10_000
_KEY_CHUNK = 500


def _fingerprint(r: UsageIn) -> str:
    payload = "\x1f".join((
        r.resource_id, r.project_id, r.scope_path, r.principal_id or "", r.meter,
        r.dimension_value, str(r.quantity), r.window_start.isoformat(),
        r.window_end.isoformat(), r.source))
    return hashlib.sha256(payload.encode()).hexdigest()


def _validate(r: UsageIn, meters: dict[str, str | None], i: int) -> str:
    where = f"record {i} ({r.idempotency_key})"
    if r.meter not in meters:
        raise ValidationFailed(f"{where}: unknown meter {r.meter!r}", field="meter")
    if meters[r.meter] and not r.dimension_value:
        raise ValidationFailed(f"{where}: meter {r.meter} needs a {meters[r.meter]} value",
                               field="dimension_value")
    if isinstance(r.quantity, bool) or not 0 < r.quantity <= MAX_QUANTITY:
        raise ValidationFailed(f"{where}: quantity must be 1..{MAX_QUANTITY}", field="quantity")
    for name in ("window_start", "window_end"):
        if getattr(r, name).tzinfo is None:
            raise ValidationFailed(f"{where}: {name} must carry a time zone", field=name)
    if r.window_end <= r.window_start:
        raise ValidationFailed(f"{where}: window_end must be after window_start",
                               field="window_end")
    parts = split_scope(r.scope_path)
    if parts[-1] != r.project_id:
        raise ValidationFailed(f"{where}: scope_path must end with the project id",
                               field="scope_path")
    return parts[0]


def ingest_usage(session: Session, records: Sequence[UsageIn], *, actor: audit.Actor,
                 now: datetime | None = None) -> IngestResult:
    """Store a batch of usage records. A key seen before with the same payload is a duplicate
    (accepted once); with a different payload the whole batch is refused with Conflict."""
    if not records:
        return IngestResult(accepted=0, duplicates=0, ids=[])
    if len(records) > MAX_BATCH:
        raise ValidationFailed(f"at most {MAX_BATCH} usage records per batch")
    now = now or utcnow()
    meters = dict(session.execute(select(MeterModel.name, MeterModel.dimension)).all())
    batch: dict[str, tuple[UsageIn, str, str]] = {}
    ids: list[str] = []
    for i, r in enumerate(records):
        org = _validate(r, meters, i)
        fp = _fingerprint(r)
        seen = batch.get(r.idempotency_key)
        if seen is not None and seen[1] != fp:
            raise Conflict(f"usage key {r.idempotency_key!r} appears twice with different "
                           "payloads", idempotency_key=r.idempotency_key)
        if seen is None:
            batch[r.idempotency_key] = (r, fp, org)
    existing: dict[str, tuple[str, str]] = {}
    keys = list(batch)
    for j in range(0, len(keys), _KEY_CHUNK):
        for key, uid, fp in session.execute(select(
                UsageRecordModel.idempotency_key, UsageRecordModel.id,
                UsageRecordModel.fingerprint).where(
                bulk.in_values(UsageRecordModel.idempotency_key, "keys")),
                {"keys": keys[j:j + _KEY_CHUNK]}):
            existing[key] = (uid, fp)
    rows = []
    fresh_ids = iter(new_ids("usage", len(batch)))
    for key, (r, fp, org) in batch.items():
        if key in existing:
            if existing[key][1] != fp:
                raise Conflict(f"usage key {key!r} was already ingested with a different "
                               "payload", idempotency_key=key, usage_id=existing[key][0])
            continue
        rows.append({
            "id": next(fresh_ids), "idempotency_key": key, "fingerprint": fp,
            "resource_id": r.resource_id, "org_id": org, "project_id": r.project_id,
            "scope_path": r.scope_path, "principal_id": r.principal_id, "meter": r.meter,
            "dimension_value": r.dimension_value, "quantity": r.quantity,
            "window_start": r.window_start, "window_end": r.window_end, "source": r.source,
            "received_at": now, "state": 0,
        })
    if rows:
        try:
            with session.begin_nested():
                bulk.insert_rows(session.connection(), UsageRecordModel.__table__, rows)
        except IntegrityError:
            raise Conflict("another ingestion stored some of these keys at the same moment; "
                           "retry the batch (duplicates will be recognised)") from None
        audit.record(session, actor=actor, action="billing.usage.ingest",
                     target_type="usage_batch", target_id=rows[0]["id"],
                     details={"accepted": len(rows), "duplicates": len(records) - len(rows)})
    stored_ids = {row["idempotency_key"]: row["id"] for row in rows}
    for r in records:
        ids.append(stored_ids.get(r.idempotency_key) or existing[r.idempotency_key][0])
    return IngestResult(accepted=len(rows), duplicates=len(records) - len(rows), ids=ids)
