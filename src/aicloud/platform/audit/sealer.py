"""The sealer: chains committed events into the hash chain, one batch per transaction.

Writers insert events unsealed in the transaction of their change and never wait for each
other (aicloud.platform.audit.service). The sealer, like Trillian's sequencer, then takes the
committed unsealed events in recording order, gives each the next ``seq`` and its
``prev_hash`` / ``hash``, and moves the head row, all in one transaction:

- One sealer at a time, across processes: it locks the chain head row (SELECT ... FOR UPDATE
  on PostgreSQL, the database write lock on SQLite) before reading anything. A second sealer
  waits, then sees the first one's events as sealed and the head where it left it.
- Crash-safe: the events' seals and the head move in one transaction, so a sealer killed at
  any point leaves the old head and its batch unsealed, or the new head and the batch sealed;
  never a half-sealed batch. The next sealer carries on.
- The chain's order is the order the sealer sees commits in. ``seq`` is given at seal time,
  not at insert: an event committed late (PostgreSQL hands out positions before commit) is
  simply sealed in a later batch, never skipped.
- It fails closed: it refuses (AuditChainBroken) to extend a head row that is not the chain's
  end, so a tampered chain is reported by `audit verify` instead of being built upon.

Until it is sealed (normally well under a second), an event is in no hash and no checkpoint:
its only protection is the append-only trigger, which the database's owner can drop.
"""

from __future__ import annotations

from sqlalchemy import Table, bindparam, func, select, text, update
from sqlalchemy.orm import Session

from aicloud.platform.audit.chain import event_hash
from aicloud.platform.audit.models import AuditEventModel
from aicloud.platform.audit.service import (
    HEAD,
    HEAD_ID,
    AuditChainBroken,
    ChainHead,
    lock_head,
)
from aicloud.shared.db import Database

EVENTS: Table = AuditEventModel.__table__  # type: ignore[assignment]
DEFAULT_BATCH = 2000
_UNSEALED = EVENTS.c.seq.is_(None)
# PostgreSQL: the whole batch as four arrays, one statement the server plans once (an
# executemany runs one UPDATE per event; a VALUES list costs a bind parameter per field).
_SEAL_ARRAYS = text(
    "UPDATE audit_events SET seq = s.seq, prev_hash = s.prev_hash, hash = s.hash "
    "FROM unnest(CAST(:ids AS text[]), CAST(:seqs AS bigint[]), CAST(:prevs AS text[]), "
    "CAST(:hashes AS text[])) AS s(id, seq, prev_hash, hash) "
    "WHERE audit_events.id = s.id AND audit_events.seq IS NULL")
_SEAL_ONE = (update(EVENTS).where(EVENTS.c.id == bindparam("s_id"), _UNSEALED)
             .values(seq=bindparam("s_seq"), prev_hash=bindparam("s_prev"),
                     hash=bindparam("s_hash")))


def seal_pending(target: Session | Database, *, batch_size: int = DEFAULT_BATCH) -> int:
    """Seal every committed unsealed event; returns how many.

    With a Database, each batch is its own transaction (a long backlog never holds the head
    for long). With a Session, everything is sealed in its transaction (the caller commits):
    what a checkpoint does before it signs."""
    if isinstance(target, Session):
        return seal_in(target, batch_size=batch_size)[1]
    total = 0
    while True:
        if not has_unsealed(target):
            return total
        with target.transaction() as session:
            n = len(seal_batch(session, lock_head(session), batch_size))
        total += n
        if n < batch_size:
            return total


def has_unsealed(db: Database) -> bool:
    """A cheap look at the sealer's work list, without the chain head's lock (polled by the
    controller before it seals)."""
    with db.transaction() as session:
        return session.execute(select(EVENTS.c.id).where(_UNSEALED).limit(1)).first() is not None


def seal_in(session: Session, *, batch_size: int = DEFAULT_BATCH) -> tuple[ChainHead, int]:
    """Lock the head and seal everything pending in this transaction: (new head, count)."""
    head = lock_head(session)
    total = 0
    while True:
        n = len(seal_batch(session, head, batch_size))
        total += n
        head = _head(session)
        if n < batch_size:
            return head, total


def seal_batch(session: Session, head: ChainHead, batch_size: int) -> list[str]:
    """Seal up to ``batch_size`` unsealed events after ``head`` (locked by the caller); the
    ids sealed, in chain order."""
    rows = session.execute(select(EVENTS).where(_UNSEALED).order_by(EVENTS.c.position)
                           .limit(batch_size)).all()
    if not rows:
        return []
    check_head_is_end(session, head, "seal")
    seq, prev = head.seq, head.hash
    seals: list[tuple[str, int, str, str]] = []
    for row in rows:
        seq += 1
        digest = event_hash(prev, {**row._mapping, "seq": seq})
        seals.append((row.id, seq, prev, digest))
        prev = digest
    done = _write_seals(session, seals)
    if done != len(seals):
        # Only a second sealer (which the head lock excludes) or a hand edit gets here.
        raise AuditChainBroken(f"sealed {done} of {len(seals)} events: another writer changed "
                               "them; the batch is rolled back")
    session.execute(update(HEAD).where(HEAD.c.id == HEAD_ID).values(seq=seq, hash=prev))
    return [s[0] for s in seals]


def _write_seals(session: Session, seals: list[tuple[str, int, str, str]]) -> int:
    """Set each event's seq, prev_hash and hash; how many rows took it."""
    if session.get_bind().dialect.name == "postgresql":
        ids, seqs, prevs, hashes = (list(col) for col in zip(*seals, strict=True))
        return session.execute(_SEAL_ARRAYS, {"ids": ids, "seqs": seqs, "prevs": prevs,
                                              "hashes": hashes}).rowcount
    # SQLite has no column list on a VALUES alias; its executemany runs in-process anyway.
    keys = ("s_id", "s_seq", "s_prev", "s_hash")
    return session.execute(_SEAL_ONE, [dict(zip(keys, s, strict=True)) for s in seals]).rowcount


def check_head_is_end(session: Session, head: ChainHead, verb: str) -> None:
    """Refuse to build on (``seal``) or vouch for (``sign``) a head row that is not the last
    sealed event: the chain was rolled back or edited by hand."""
    at_head = (session.scalar(select(EVENTS.c.hash).where(EVENTS.c.seq == head.seq))
               if head.seq else None)
    beyond = session.scalar(select(func.count()).select_from(EVENTS)
                            .where(EVENTS.c.seq > head.seq))
    why = []
    if head.seq and at_head != head.hash:
        why.append(f"event {head.seq} {'has another hash' if at_head else 'is missing'}")
    if beyond:
        why.append(f"{beyond} event(s) lie beyond it")
    if why:
        raise AuditChainBroken(
            f"refusing to {verb}: the head row (seq {head.seq}) is not the chain's end "
            f"({', '.join(why)}); run `aicloud audit verify`")


def _head(session: Session) -> ChainHead:
    row = session.execute(select(HEAD.c.seq, HEAD.c.hash).where(HEAD.c.id == HEAD_ID)).one()
    return ChainHead(row.seq, row.hash)
