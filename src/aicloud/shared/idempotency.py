"""Stored responses for ``Idempotency-Key`` retries.

A key is claimed inside the same transaction as the operation it protects, so either both
the effect and the stored response commit, or neither does: a retry after a crash runs the
operation again instead of replaying a response for work that never happened.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Integer, String, Text, delete
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Mapped, Session, mapped_column

from aicloud.shared.clock import utcnow
from aicloud.shared.db.base import Base, UTCDateTime
from aicloud.shared.errors import IdempotencyInProgress, IdempotencyKeyReused, ValidationFailed

MAX_KEY_LENGTH = 255


class IdempotencyKeyModel(Base):
    __tablename__ = "idempotency_keys"

    # Keys are per caller: two callers may pick the same key without colliding.
    scope: Mapped[str] = mapped_column(String(128), primary_key=True)
    key: Mapped[str] = mapped_column(String(MAX_KEY_LENGTH), primary_key=True)
    fingerprint: Mapped[str] = mapped_column(String(64))
    method: Mapped[str] = mapped_column(String(10))
    path: Mapped[str] = mapped_column(String(1024))
    status_code: Mapped[int | None] = mapped_column(Integer, nullable=True)
    response_body: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)


@dataclass(frozen=True)
class StoredResponse:
    status_code: int
    body: Any


def fingerprint(method: str, path: str, body: bytes) -> str:
    h = hashlib.sha256()
    for part in (method.upper().encode(), path.encode(), body):
        h.update(len(part).to_bytes(8, "big"))
        h.update(part)
    return h.hexdigest()


def validate_key(key: str) -> str:
    if not key or len(key) > MAX_KEY_LENGTH or not key.isprintable():
        raise ValidationFailed(
            f"Idempotency-Key must be 1-{MAX_KEY_LENGTH} printable characters"
        )
    return key


def claim(
    session: Session, *, scope: str, key: str, method: str, path: str, fp: str
) -> StoredResponse | None:
    """Claim ``key`` for this request, or return the response stored for an earlier one.

    Raises IdempotencyKeyReused when the key was used for a different request.
    """
    validate_key(key)
    existing = session.get(IdempotencyKeyModel, (scope, key))
    if existing is None:
        try:
            with session.begin_nested():
                session.add(
                    IdempotencyKeyModel(
                        scope=scope, key=key, fingerprint=fp, method=method, path=path,
                        created_at=utcnow(),
                    )
                )
                session.flush()
            return None
        except IntegrityError:
            # Another transaction claimed it first and has committed by now (the insert
            # waited on its row lock); read what it stored.
            existing = session.get(IdempotencyKeyModel, (scope, key), populate_existing=True)
            if existing is None:  # pragma: no cover - the other transaction rolled back
                raise IdempotencyInProgress() from None
    if existing.fingerprint != fp:
        raise IdempotencyKeyReused(key=key)
    if existing.status_code is None:
        raise IdempotencyInProgress(key=key)
    return StoredResponse(existing.status_code, json.loads(existing.response_body or "null"))


def complete(session: Session, *, scope: str, key: str, status_code: int, body: Any) -> None:
    record = session.get(IdempotencyKeyModel, (scope, key))
    if record is None:  # pragma: no cover - claim() always runs first
        raise RuntimeError("idempotency key was not claimed")
    record.status_code = status_code
    record.response_body = json.dumps(body)
    session.flush()


def purge_expired(session: Session, *, older_than: timedelta, now: datetime | None = None) -> int:
    cutoff = (now or utcnow()) - older_than
    result = session.execute(
        delete(IdempotencyKeyModel).where(IdempotencyKeyModel.created_at < cutoff)
    )
    return result.rowcount or 0


