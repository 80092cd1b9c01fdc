"""Verification of the audit chain: recompute every hash, follow every link, check the head
row and every signed checkpoint, and name the first broken link.

Events are streamed in seq order in batches, each batch in its own short transaction, so a
chain of millions of events is checked in constant memory without holding a lock (SQLite) or
an old snapshot (PostgreSQL) for the whole run. That is safe because everything at or below
the head read at the start is already committed and append-only; events appended while the
check runs are simply beyond its bound.

What each tamper looks like:
- an edited event no longer matches its hash (``edited``); if its hash was recomputed too, the
  next event still commits to the old hash (``edited``, named at the rewritten event);
- a deleted event leaves a gap in seq (``deleted``), or, when it was the last one, the head
  row or a checkpoint still records it (``deleted``);
- an inserted event is skipped over by the link of the event after it (``inserted``), or sits
  beyond the head row when appended at the end;
- reordered events commit to a predecessor that sits elsewhere in the chain (``reordered``);
- a chain rewritten with every hash recomputed (and the head row with it) no longer matches
  the hash signed in a checkpoint (``checkpoint_mismatch``), and only the signing key can make
  a checkpoint that would (``checkpoint_forged`` otherwise);
- a checkpoint dropped from the middle leaves a gap in the ordinals (``checkpoint_missing``);
- events still unsealed after ``unsealed_bound_seconds`` mean the sealer stopped
  (``unsealed``): until sealed they are in no hash, so their deletion would not show.

What only the published copies outside the database show (``published``, ``--against``):
the tail removed with the head rolled back and the newest checkpoints dropped, everything
emptied (``rolled_back``); the whole chain rewritten after dropping every checkpoint
(``checkpoint_mismatch`` at the first published seq); a published checkpoint dropped or
edited in the database (``checkpoint_missing``, ``checkpoint_mismatch``); and a published
file that does not verify (``anchor_invalid``). Changes after the last publication remain
invisible to both.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, replace
from datetime import datetime, timedelta
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from sqlalchemy import Table, and_, func, or_, select

from aicloud.platform.audit.anchors import Published
from aicloud.platform.audit.chain import GENESIS_HASH, event_hash
from aicloud.platform.audit.checkpoints import Checkpoint, checkpoint_problem
from aicloud.platform.audit.models import (
    AuditChainHeadModel,
    AuditCheckpointModel,
    AuditEventModel,
)
from aicloud.platform.audit.service import HEAD_ID
from aicloud.shared.clock import utcnow
from aicloud.shared.db import Database

EVENTS: Table = AuditEventModel.__table__  # type: ignore[assignment]
CHECKPOINTS: Table = AuditCheckpointModel.__table__  # type: ignore[assignment]
BREAK_KINDS = ("edited", "deleted", "inserted", "reordered", "head_missing", "head_mismatch",
               "checkpoint_forged", "checkpoint_mismatch", "checkpoint_missing", "rolled_back",
               "anchor_invalid", "unsealed")
DEFAULT_BATCH = 5000
# The sealer runs every audit_seal_interval_seconds (a fraction of a second): an event left
# unsealed for a minute means no sealer is running.
DEFAULT_UNSEALED_BOUND = 60.0


@dataclass(frozen=True)
class Break:
    """The first place the chain is broken and what most likely happened there."""

    kind: str
    seq: int | None
    event_id: str | None
    message: str


@dataclass(frozen=True)
class VerifyResult:
    ok: bool
    events_checked: int
    last_seq: int
    last_hash: str
    head_seq: int | None
    head_hash: str | None
    checkpoints_checked: int
    latest_checkpoint_seq: int | None
    first_break: Break | None
    # With ``published``: where they came from and how many were compared.
    published_sink: str | None = None
    published_checked: int | None = None
    # Events committed but not yet sealed into the chain (in no hash yet), and the age of the
    # oldest one in seconds (by occurred_at).
    unsealed: int = 0
    oldest_unsealed_age_seconds: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class _Snapshot:
    head_seq: int | None
    head_hash: str | None
    max_event_seq: int
    max_checkpoint_seq: int
    unsealed: int
    oldest_unsealed: Any  # (occurred_at, id) or None


def _snapshot(db: Database) -> _Snapshot:
    head = AuditChainHeadModel
    with db.transaction() as s:
        # One statement, so one snapshot even under READ COMMITTED: the sealer moves the head
        # and seals events atomically, so any difference seen here is a tamper, not a race.
        row = s.execute(select(
            select(head.seq).where(head.id == HEAD_ID).scalar_subquery(),
            select(head.hash).where(head.id == HEAD_ID).scalar_subquery(),
            select(func.max(AuditEventModel.seq)).scalar_subquery(),
            select(func.max(AuditCheckpointModel.seq)).scalar_subquery(),
            select(func.count()).select_from(AuditEventModel)
            .where(AuditEventModel.seq.is_(None)).scalar_subquery(),
        )).one()
        # The first recorded (the sealer's partial index), not a scan by occurred_at.
        oldest = s.execute(select(EVENTS.c.occurred_at, EVENTS.c.id)
                           .where(EVENTS.c.seq.is_(None))
                           .order_by(EVENTS.c.position).limit(1)).first()
    return _Snapshot(row[0], row[1], row[2] or 0, row[3] or 0, row[4] or 0, oldest)


def _stream(db: Database, table: Table, bound: int, batch: int) -> Iterator[Any]:
    """Rows of ``table`` with seq <= bound in (seq, id) order, one batch per transaction."""
    seq_col, id_col = table.c.seq, table.c.id
    after: tuple[int, str] | None = None
    while True:
        stmt = select(table).where(seq_col <= bound)
        if after is not None:
            # (seq, id) keyset: still exact if an attacker dropped the unique seq constraint.
            stmt = stmt.where(or_(seq_col > after[0],
                                  and_(seq_col == after[0], id_col > after[1])))
        with db.transaction() as s:
            rows = s.execute(stmt.order_by(seq_col, id_col).limit(batch)).all()
        yield from rows
        if len(rows) < batch:
            return
        after = (rows[-1].seq, rows[-1].id)


def _checkpoint(row: Any) -> Checkpoint:
    return Checkpoint.of(row)


def _event_at(db: Database, **where: Any) -> tuple[int, str] | None:
    """(seq, id) of the first event matching, used only to explain a break once found."""
    with db.transaction() as s:
        stmt = select(EVENTS.c.seq, EVENTS.c.id).filter_by(**where).order_by(EVENTS.c.seq)
        row = s.execute(stmt.limit(1)).first()
    return (row.seq, row.id) if row else None


def _link_break(db: Database, row: Any, prev_id: str | None) -> Break:
    """Event ``row`` does not commit to the hash of the event before it: explain why."""
    s = row.seq
    # Genesis is the hash "before event 1": an event committing to it at s > 1 means events
    # were inserted in front of it.
    target = (0, "genesis") if row.prev_hash == GENESIS_HASH else _event_at(db, hash=row.prev_hash)
    if target is None:
        if event_hash(row.prev_hash, row._mapping) != row.hash:
            return Break("edited", s, row.id,
                         f"event {s} ({row.id}) does not match its hash: it was edited")
        if s == 1:
            return Break("deleted", 1, row.id,
                         "event 1 does not start from the genesis hash: the start of the "
                         "chain was removed")
        return Break("edited", s - 1, prev_id,
                     f"event {s - 1} ({prev_id}) was edited and its hash recomputed: event "
                     f"{s} still commits to its original hash")
    t, t_id = target
    if t < s - 1:
        first = _event_at(db, seq=t + 1)
        return Break("inserted", t + 1, first[1] if first else None,
                     f"event(s) {t + 1}..{s - 1} were inserted: event {s} ({row.id}) commits "
                     f"to event {t} ({t_id})")
    return Break("reordered", s, row.id,
                 f"event {row.id} at seq {s} commits to the event now at seq {t} ({t_id}): "
                 "events were reordered")


def verify_chain(
    db: Database,
    trusted_keys: dict[str, Ed25519PublicKey],
    *,
    batch_size: int = DEFAULT_BATCH,
    on_progress: Callable[[int, int], None] | None = None,
    published: Published | None = None,
    unsealed_bound_seconds: float = DEFAULT_UNSEALED_BOUND,
    now: datetime | None = None,
) -> VerifyResult:
    """Recompute the whole chain and check the head and every checkpoint; with ``published``
    (read from a sink outside the database), also that the database still holds every
    published checkpoint and the chain each one signed. Events not sealed yet are counted;
    one older than ``unsealed_bound_seconds`` is a problem (``unsealed``): the sealer stopped."""
    snap = _snapshot(db)
    age = ((now or utcnow()) - snap.oldest_unsealed[0]).total_seconds() \
        if snap.oldest_unsealed else None
    by_seq: dict[int, list[Checkpoint]] = {}
    for p in published.checkpoints if published else ():
        by_seq.setdefault(p.seq, []).append(p)
    bound = max(snap.head_seq or 0, snap.max_event_seq)
    checkpoints = (_checkpoint(r) for r in
                   _stream(db, CHECKPOINTS, max(snap.max_checkpoint_seq, bound), batch_size))
    cp = next(checkpoints, None)
    expected, prev_hash, prev_id = 1, GENESIS_HASH, None
    checked_cps, last_good_cp, beyond_head_id = 0, 0, None

    def result(brk: Break | None) -> VerifyResult:
        return VerifyResult(
            ok=brk is None, events_checked=expected - 1, last_seq=expected - 1,
            last_hash=prev_hash, head_seq=snap.head_seq, head_hash=snap.head_hash,
            checkpoints_checked=checked_cps, latest_checkpoint_seq=snap.max_checkpoint_seq or None,
            first_break=brk, unsealed=snap.unsealed, oldest_unsealed_age_seconds=age)

    for row in _stream(db, EVENTS, bound, batch_size):
        s = row.seq
        if s < expected:
            return result(Break("inserted", s, row.id,
                                f"a second event with seq {s} ({row.id}) was inserted"))
        if s > expected:
            return result(Break(
                "deleted", expected, None,
                f"event(s) {expected}..{s - 1} are missing (deleted): the chain jumps from "
                f"{expected - 1} to {s} ({row.id})"))
        if row.prev_hash != prev_hash:
            return result(_link_break(db, row, prev_id))
        if event_hash(row.prev_hash, row._mapping) != row.hash:
            return result(Break("edited", s, row.id,
                                f"event {s} ({row.id}) does not match its hash: it was edited"))
        for p in by_seq.get(s, ()):
            if p.head_hash != row.hash:
                assert published is not None
                return result(Break(
                    "checkpoint_mismatch", s, row.id,
                    f"checkpoint {p.id} published in {published.sink} signed hash "
                    f"{p.head_hash[:16]}… at seq {s}, the chain now has {row.hash[:16]}…: "
                    f"event(s) up to {s} were rewritten with recomputed hashes (or the chain "
                    "was rolled back and appended to again)"))
        while cp is not None and cp.seq <= s:
            checked_cps += 1
            if problem := checkpoint_problem(cp, trusted_keys):
                return result(Break("checkpoint_forged", cp.seq, None, problem))
            if cp.seq == s and cp.head_hash != row.hash and (
                    (moved := _event_at(db, hash=cp.head_hash)) and moved[0] > s):
                # The checkpointed event now sits further on: events were put in front of it.
                return result(Break(
                    "inserted", s, row.id,
                    f"event(s) {s}..{moved[0] - 1} were inserted: checkpoint {cp.id} signed "
                    f"event {moved[1]} at seq {s}, which now sits at seq {moved[0]}"))
            if cp.seq != s or cp.head_hash != row.hash or cp.event_count != s:
                return result(Break(
                    "checkpoint_mismatch", cp.seq, row.id,
                    f"checkpoint {cp.id} signed hash {cp.head_hash[:16]}… for {cp.event_count} "
                    f"events at seq {cp.seq}, the chain has {row.hash[:16]}…: event(s) "
                    f"{last_good_cp + 1}..{cp.seq} were rewritten with recomputed hashes"))
            last_good_cp = cp.seq
            cp = next(checkpoints, None)
        if snap.head_seq is not None and s == snap.head_seq + 1:
            beyond_head_id = row.id
        expected, prev_hash, prev_id = s + 1, row.hash, row.id
        if on_progress is not None and s % batch_size == 0:
            on_progress(s, bound)
    last = expected - 1
    if on_progress is not None:
        on_progress(last, bound)

    if snap.head_seq is None and last == 0:
        # An emptied database: the service recreates the head at genesis on the next append.
        snap.head_seq, snap.head_hash = 0, GENESIS_HASH
    if snap.head_seq is None:
        return result(Break("head_missing", None, None,
                            "the chain head row is missing (deleted); appending is refused "
                            "until it is restored"))
    if snap.head_seq > last:
        return result(Break(
            "deleted", last + 1, None,
            f"event(s) {last + 1}..{snap.head_seq} are missing (deleted): the chain ends at "
            f"{last} but the head row records seq {snap.head_seq}"))
    if snap.head_seq < last:
        return result(Break(
            "inserted", snap.head_seq + 1, beyond_head_id,
            f"event(s) {snap.head_seq + 1}..{last} lie beyond the head row (seq "
            f"{snap.head_seq}): appended outside the audit service, or the head rolled back"))
    if snap.head_hash != prev_hash:
        return result(Break(
            "head_mismatch", last, prev_id,
            f"the head row's hash differs from event {last}'s: the head row or the last "
            "event was rewritten"))
    if cp is not None:
        checked_cps += 1
        if problem := checkpoint_problem(cp, trusted_keys):
            return result(Break("checkpoint_forged", cp.seq, None, problem))
        return result(Break(
            "deleted", last + 1, None,
            f"checkpoint {cp.id} signed seq {cp.seq} but the chain ends at {last}: event(s) "
            f"{last + 1}..{cp.seq} were deleted and the head row rolled back"))
    db_checkpoints = {c.id: c for c in map(_checkpoint, _stream(
        db, CHECKPOINTS, max(snap.max_checkpoint_seq, bound), batch_size))}
    brk = _ordinal_break(db_checkpoints.values())
    if brk is None and published is not None:
        brk = _published_break(published, db_checkpoints, last)
    if brk is None and age is not None and age > unsealed_bound_seconds:
        brk = _unsealed_break(snap, age)
    res = result(brk)
    if published is not None:
        res = replace(res, published_sink=published.sink,
                      published_checked=len(published.checkpoints))
    return res


def _unsealed_break(snap: _Snapshot, age: float) -> Break:
    when, event_id = snap.oldest_unsealed
    return Break(
        "unsealed", None, event_id,
        f"{snap.unsealed} event(s) are committed but not sealed into the chain, the oldest "
        f"({event_id}, occurred {when.isoformat()}) for {timedelta(seconds=int(age))}: no "
        "sealer is running (the audit-sealer controller of `aicloud serve` / `aicloud worker`, "
        "or `aicloud audit seal`). Until sealed they are in no hash: their deletion would not "
        "show")


def _ordinal_break(checkpoints: Iterable[Checkpoint]) -> Break | None:
    """Ordinals run 1, 2, 3, ... with the signed seq never going down: a gap is a checkpoint
    dropped from the database (only the newest can go unnoticed without the published copies)."""
    expected, prev_seq = 1, 0
    for c in sorted((c for c in checkpoints if c.ordinal is not None),
                    key=lambda c: c.ordinal or 0):
        if c.ordinal != expected:
            return Break("checkpoint_missing", c.seq, None,
                         f"checkpoint(s) {expected}..{(c.ordinal or 0) - 1} are missing before "
                         f"checkpoint {c.id} (number {c.ordinal}, seq {c.seq}): dropped from the "
                         "database")
        if c.seq < prev_seq:
            return Break("checkpoint_mismatch", c.seq, None,
                         f"checkpoint {c.id} (number {c.ordinal}) signed seq {c.seq}, below the "
                         f"seq {prev_seq} its predecessor signed: the chain was rolled back "
                         "between them")
        expected, prev_seq = expected + 1, c.seq
    return None


def _published_break(published: Published, in_db: dict[str, Checkpoint],
                     last: int) -> Break | None:
    if published.problems:
        return Break("anchor_invalid", None, None,
                     f"{published.sink}: {published.problems[0]}"
                     + (f" (and {len(published.problems) - 1} more)"
                        if len(published.problems) > 1 else ""))
    for p in published.checkpoints:
        if p.seq > last:
            return Break(
                "rolled_back", last + 1, None,
                f"checkpoint {p.id} published in {published.sink} signed {p.event_count} "
                f"event(s) up to seq {p.seq}, the database's chain ends at {last}: event(s) "
                f"{last + 1}..{p.seq} were removed and the head rolled back")
        mine = in_db.get(p.id)
        if mine is None:
            return Break("checkpoint_missing", p.seq, None,
                         f"checkpoint {p.id} (seq {p.seq}) published in {published.sink} is "
                         "missing from the database: it was dropped")
        if mine != p:
            return Break("checkpoint_mismatch", p.seq, None,
                         f"checkpoint {p.id} (seq {p.seq}) differs from the copy published in "
                         f"{published.sink}: it was edited in the database")
    return None
