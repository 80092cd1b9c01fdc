"""Leases: how several controller processes share rows without processing one twice.

A table that controllers reconcile mixes in :class:`LeaseColumns` (``lock_token``,
``lock_owner``, ``lock_expires_at``). A worker:

1. claims up to N due rows in a short transaction and commits (:func:`claim`): each claimed
   row gets a fresh random token and an expiry;
2. re-reads each row by its lease (:func:`get_leased`) and does the slow work (calls a
   provider...) outside any transaction, calling :func:`heartbeat` now and then when the
   work outlives the lease. A worker may also keep its leases for as long as the rows need
   it (the node agent does): :func:`heartbeat` renews any number of them in one UPDATE, and
   :func:`release_all` hands them all back on a clean stop;
3. writes its result with :func:`update_leased` or :func:`release`, which are conditional on
   ``lock_token = :token``: when they return False the lease was lost (it expired and
   another worker reclaimed the row), and the worker must drop its result.

A lease that expires (its worker crashed or stalled) makes the row claimable again; the
stale worker's token no longer matches, so its late write is refused instead of
overwriting the new owner's.

PostgreSQL: candidates are selected ``FOR UPDATE SKIP LOCKED``, so concurrent claimers skip
each other's rows instead of queuing behind them. SQLite: the engine begins every
transaction with ``BEGIN IMMEDIATE``, so claimers are serialized by the database lock. On
both, the token is set by an ``UPDATE ... WHERE`` the lease is free or expired, so a row is
never handed out twice even when the selection raced.
"""

from __future__ import annotations

import os
import secrets
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy import ColumnElement, String
from sqlalchemy.orm import Mapped, Session, mapped_column

from aicloud.shared.clock import Clock, SystemClock
from aicloud.shared.db.base import UTCDateTime

_SYSTEM_CLOCK = SystemClock()


class LeaseColumns:
    """Mixin for a mapped class whose rows are claimed by controllers."""

    lock_token: Mapped[str | None] = mapped_column(String(64), nullable=True, default=None)
    lock_owner: Mapped[str | None] = mapped_column(String(128), nullable=True, default=None)
    # Indexed: every claim filters on it.
    lock_expires_at: Mapped[datetime | None] = mapped_column(
        UTCDateTime, nullable=True, default=None, index=True
    )


@dataclass(frozen=True)
class Lease:
    """Proof that ``owner`` holds row ``row_id`` until ``expires_at``."""

    row_id: Any
    token: str
    owner: str
    expires_at: datetime


def _pk(model: type[Any]) -> sa.Column[Any]:
    cols = list(sa.inspect(model).primary_key)
    if len(cols) != 1:
        raise TypeError(f"{model.__name__}: leases need a single-column primary key")
    return cols[0]


def _is_free(model: type[Any], now: datetime) -> ColumnElement[bool]:
    return sa.or_(model.lock_expires_at.is_(None), model.lock_expires_at <= now)


def claim(
    session: Session,
    model: type[Any],
    *,
    owner: str,
    limit: int,
    ttl: timedelta,
    where: Sequence[ColumnElement[bool]] = (),
    order_by: Sequence[Any] = (),
    clock: Clock = _SYSTEM_CLOCK,
) -> list[Lease]:
    """Claim up to ``limit`` rows matching ``where`` whose lease is free or expired.

    Commit the session right after, so other claimers see the claims. Rows come in
    ``order_by`` order (default: primary key), so the oldest due work goes first.
    """
    if limit <= 0:
        return []
    now = clock.now()
    pk = _pk(model)
    query = (
        sa.select(pk)
        .where(_is_free(model, now), *where)
        .order_by(*(order_by or (pk,)))
        .limit(limit)
    )
    if session.get_bind().dialect.name == "postgresql":
        query = query.with_for_update(skip_locked=True)
    candidates = list(session.execute(query).scalars())
    expires_at = now + ttl
    leases: list[Lease] = []
    for row_id in candidates:
        token = secrets.token_hex(16)
        # The free-or-expired condition again: a claimer whose selection raced with another
        # claim (possible on any backend without row locks) gets rowcount 0 here.
        result = session.execute(
            sa.update(model.__table__)
            .where(pk == row_id, _is_free(model, now))
            .values(lock_token=token, lock_owner=owner, lock_expires_at=expires_at)
        )
        if result.rowcount == 1:  # type: ignore[attr-defined]
            leases.append(Lease(row_id, token, owner, expires_at))
    return leases


def get_leased(session: Session, model: type[Any], lease: Lease) -> Any | None:
    """The leased row, re-read in this session; None when the lease was lost."""
    pk = _pk(model)
    return session.execute(
        sa.select(model).where(pk == lease.row_id, model.lock_token == lease.token)
    ).scalar_one_or_none()


def update_leased(
    session: Session, model: type[Any], lease: Lease, values: dict[str, Any]
) -> bool:
    """Apply ``values`` to the leased row only if the lease is still held; False if lost.

    The token alone decides: an expired lease that nobody reclaimed is still this worker's
    (reclaiming changes the token), so a slow but unchallenged worker may still finish.
    """
    reserved = {"lock_token", "lock_owner", "lock_expires_at"} & values.keys()
    if reserved:
        raise ValueError(f"use heartbeat()/release() to change {sorted(reserved)}")
    pk = _pk(model)
    result = session.execute(
        sa.update(model.__table__)
        .where(pk == lease.row_id, model.lock_token == lease.token)
        .values(**values)
    )
    return result.rowcount == 1  # type: ignore[attr-defined,no-any-return]


def heartbeat(
    session: Session,
    model: type[Any],
    leases: Sequence[Lease],
    *,
    ttl: timedelta,
    clock: Clock = _SYSTEM_CLOCK,
) -> list[Lease]:
    """Extend the given leases to now + ``ttl``; returns those still held (lost ones dropped).

    One UPDATE for all of them (per :data:`BATCH` leases), not one per row: a worker holding
    many leases renews them at the cost of a single statement. A row counts as held when both
    its key and its token match; the statement reports back which ones did.
    """
    expires_at = clock.now() + ttl
    held = _touch(session, model, leases, {"lock_expires_at": expires_at})
    return [Lease(lease.row_id, lease.token, lease.owner, expires_at)
            for lease in leases if (lease.row_id, lease.token) in held]


def release_all(session: Session, model: type[Any], leases: Sequence[Lease]) -> list[Lease]:
    """Clear every given lease still held, in one UPDATE (per :data:`BATCH`); returns them.

    For a worker that stops cleanly: its rows are claimable at once instead of after the TTL.
    """
    held = _touch(session, model, leases,
                  {"lock_token": None, "lock_owner": None, "lock_expires_at": None})
    return [lease for lease in leases if (lease.row_id, lease.token) in held]


BATCH = 500  # bound parameters per statement stay well under every backend's limit


def _touch(session: Session, model: type[Any], leases: Sequence[Lease],
           values: dict[str, Any]) -> set[tuple[Any, str]]:
    """Apply ``values`` to the rows of ``leases`` whose token still matches; the (key, token)
    pairs that did. ``key IN (...)`` keeps the statement on the primary key index; the
    (key, token) pairs make a row count only for the lease that set its token."""
    pk = _pk(model)
    table = model.__table__
    returning = session.get_bind().dialect.update_returning
    held: set[tuple[Any, str]] = set()
    for i in range(0, len(leases), BATCH):
        chunk = leases[i:i + BATCH]
        pairs = [(lease.row_id, lease.token) for lease in chunk]
        match = (pk.in_([k for k, _ in pairs]),
                 sa.tuple_(pk, table.c.lock_token).in_(pairs))
        update = sa.update(table).where(*match).values(**values)
        if returning:
            keys = set(session.execute(update.returning(pk)).scalars())
        else:  # no RETURNING (an old SQLite): read the matches first, in this transaction
            keys = set(session.execute(sa.select(pk).where(*match)).scalars())
            session.execute(update)
        held |= {(k, t) for k, t in pairs if k in keys}
    return held


def release(
    session: Session,
    model: type[Any],
    lease: Lease,
    values: dict[str, Any] | None = None,
) -> bool:
    """Clear the lease (and apply ``values`` in the same statement) if still held."""
    values = dict(values or {})
    reserved = {"lock_token", "lock_owner", "lock_expires_at"} & values.keys()
    if reserved:
        raise ValueError(f"release() manages {sorted(reserved)} itself")
    pk = _pk(model)
    result = session.execute(
        sa.update(model.__table__)
        .where(pk == lease.row_id, model.lock_token == lease.token)
        .values(lock_token=None, lock_owner=None, lock_expires_at=None, **values)
    )
    return result.rowcount == 1  # type: ignore[attr-defined,no-any-return]


def lease_owner_name(component: str) -> str:
    """A readable ``lock_owner``: which host, process and component holds a lease."""
    return f"{socket.gethostname()}:{os.getpid()}:{component}"[:128]
