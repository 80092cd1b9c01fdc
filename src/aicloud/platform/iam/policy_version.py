"""The policy version row: bumped in the transaction of any change that alters decisions,
and how fresh a process's view of it must be."""

from __future__ import annotations

import secrets
from typing import Any

from sqlalchemy import delete, event, func, select, update
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, SessionTransaction

from aicloud.platform.iam.models import PolicyChangeModel, PolicyVersionModel
from aicloud.shared.db import snapshot_reader

DIRTY = "aicloud.iam.policy_dirty"

# A change committed by one process is enforced by every other within this bound: a shared
# snapshot not proven current for this long is checked against the version row per request.
MAX_STALENESS_SECONDS = 1.0
# How often each API process's watcher reads the version row (one primary-key read): a
# tenth of the bound, so that a poll plus a full rebuild of up to ~0.9 s still fits in it.
POLL_INTERVAL_SECONDS = 0.1


# Change rows kept: a snapshot further behind than half of this rebuilds in full.
CHANGES_KEPT = 10_000


def bump_policy_version(session: Session, *, kind: str = "full",
                        principal_id: str | None = None, scope_id: str | None = None) -> None:
    """Give the policy a new version and log what changed: ``binding``/``deny`` with the
    principal and scope whose role/deny bindings changed (a snapshot re-reads just those),
    or ``full`` for anything else (hierarchy, roles, groups, principals: it rebuilds)."""
    # A random value rather than a counter: a version can then never come back (a restored
    # backup, a truncated table) and be mistaken for a snapshot cached before. The UPDATE also
    # row-locks on PostgreSQL, so policy writers serialize, and the change rows inserted after
    # it get their sequence numbers in commit order.
    new = secrets.randbits(62)
    done = session.execute(update(PolicyVersionModel).where(PolicyVersionModel.id == 1)
                           .values(version=new))
    if not done.rowcount:  # type: ignore[attr-defined]
        session.add(PolicyVersionModel(id=1, version=new))
        session.flush()
    row = PolicyChangeModel(version=new, kind=kind, principal_id=principal_id, scope_id=scope_id)
    session.add(row)
    session.flush()
    if row.seq % 1000 == 0:  # now and then, forget what no snapshot can still need
        session.execute(delete(PolicyChangeModel)
                        .where(PolicyChangeModel.seq <= row.seq - CHANGES_KEPT))
    session.info[DIRTY] = True


def policy_changes_since(session: Session, seq: int, version: int) -> list[Any] | None:
    """The changes logged after the one numbered ``seq`` (which produced ``version``), in
    order; None when the log cannot say (that change is gone: pruned, or the database was
    restored or emptied), and the caller must rebuild in full."""
    base = session.scalar(select(PolicyChangeModel.version)
                          .where(PolicyChangeModel.seq == seq)) if seq else None
    if base is None or base != version:
        return None
    rows = list(session.execute(
        select(PolicyChangeModel.seq, PolicyChangeModel.version, PolicyChangeModel.kind,
               PolicyChangeModel.principal_id, PolicyChangeModel.scope_id)
        .where(PolicyChangeModel.seq > seq).order_by(PolicyChangeModel.seq)
        .limit(CHANGES_KEPT // 2)).all())
    return None if len(rows) >= CHANGES_KEPT // 2 else rows


def newest_policy_change(session: Session) -> int:
    return session.scalar(select(func.max(PolicyChangeModel.seq))) or 0


# Built once, on the table (no ORM layers): each API process's watcher reads it ten times a
# second. The row is only ever written by bump_policy_version, with flushed statements.
_VERSION = select(PolicyVersionModel.__table__.c.version).where(
    PolicyVersionModel.__table__.c.id == 1)


def current_policy_version(session: Session) -> int:
    return session.scalar(_VERSION) or 0


def has_uncommitted_policy_changes(session: Session) -> bool:
    return bool(session.info.get(DIRTY))


@event.listens_for(Session, "after_transaction_end")
def _forget_dirty(session: Session, transaction: SessionTransaction) -> None:
    if transaction.parent is None:
        session.info.pop(DIRTY, None)


def reader_engine(engine: Engine) -> Any:
    """Where the watcher reads the policy without waiting on (or blocking) writers.

    PostgreSQL: the same pool, in REPEATABLE READ so the version row and the tables it
    versions are read from one snapshot. SQLite: every write transaction of the application's
    engine begins IMMEDIATE, and a request holding the write lock may be waiting for the very
    rebuild the watcher does, so the watcher reads on a separate, never-pooled engine of
    deferred, query-only transactions (``shared.db.snapshot_reader``). False for an in-memory
    database, which no second connection can see.
    """
    if engine.dialect.name != "sqlite":
        return engine.execution_options(isolation_level="REPEATABLE READ")
    return snapshot_reader(engine) or False
