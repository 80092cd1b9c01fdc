"""The sealer: writers insert unsealed events without touching the chain head, one sealer at
a time chains them (PostgreSQL and SQLite), crash-safe, and verify watches for a stopped one."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from datetime import timedelta

import pytest
import sqlalchemy as sa
from sqlalchemy import func, select

from aicloud.platform import audit
from aicloud.platform.audit.service import write_pending
from aicloud.runtime import AppContext
from aicloud.shared.clock import utcnow
from aicloud.shared.db import Database
from tests.platform.audit.helpers import EVENTS, HEAD, KEY, checkpoint, seed, verify

WRITERS, TXNS, PER_TXN = 8, 10, 3


def _write_concurrently(db: Database, *, sealers: int = 0) -> int:
    """WRITERS threads each commit TXNS transactions of PER_TXN events while ``sealers``
    threads (each with its own connections) seal in a loop; returns the events written."""
    errors: list[BaseException] = []
    done = threading.Event()
    start = threading.Barrier(WRITERS + sealers)

    def writer(w: int) -> None:
        try:
            start.wait()
            for t in range(TXNS):
                with db.transaction() as s:
                    for e in range(PER_TXN):
                        audit.record(s, actor=audit.Actor.system(f"w{w}"), action="test.write",
                                     target_type="thing", target_id=f"{w}-{t}-{e}")
        except BaseException as exc:  # reported below
            errors.append(exc)

    def sealer() -> None:
        try:
            start.wait()
            while not done.is_set():
                audit.seal_pending(db, batch_size=7)  # small batches: many interleavings
        except BaseException as exc:
            errors.append(exc)

    writers = [threading.Thread(target=writer, args=(w,)) for w in range(WRITERS)]
    sealing = [threading.Thread(target=sealer) for _ in range(sealers)]
    for t in writers + sealing:
        t.start()
    for t in writers:
        t.join(120)
    done.set()
    for t in sealing:
        t.join(60)
    assert not errors, errors
    return WRITERS * TXNS * PER_TXN


def _sealed_exactly_once(db: Database, total: int) -> None:
    with db.transaction() as s:
        seqs = list(s.scalars(select(EVENTS.c.seq).order_by(EVENTS.c.seq)))
        targets = s.scalar(select(func.count(func.distinct(EVENTS.c.target_id))))
    assert seqs == list(range(1, total + 1)) and targets == total
    result = verify(db)
    assert result.ok, result.first_break
    assert (result.events_checked, result.unsealed) == (total, 0)


def test_concurrent_writers_then_one_seal(db: Database) -> None:
    total = _write_concurrently(db)
    with db.transaction() as s:  # the writers never touched the chain
        assert s.scalar(select(HEAD.c.seq)) in (0, None)
        assert s.scalar(select(func.count()).where(EVENTS.c.seq.is_(None))) == total
    assert audit.seal_pending(db) == total
    assert audit.seal_pending(db) == 0
    _sealed_exactly_once(db, total)


def test_two_sealers_beside_the_writers_never_fork_the_chain(db: Database) -> None:
    """Two sealers with their own connections race each other and the writers."""
    total = _write_concurrently(db, sealers=2)
    audit.seal_pending(db)  # whatever committed after the sealers' last pass
    _sealed_exactly_once(db, total)


def test_a_late_commit_is_sealed_in_a_later_batch_never_skipped(db: Database) -> None:
    """On PostgreSQL an event's position is given at insert, before commit: the event of a
    transaction that commits after a later one is sealed after it (chain order is the
    sealer's order), not lost behind a gap."""
    if db.dialect != "postgresql":
        pytest.skip("SQLite serializes writers: no commit can overtake another")
    slow = db.session()
    try:
        slow.begin()
        audit.record(slow, actor=audit.Actor.system("slow"), action="late", target_type="t",
                     target_id="late")
        write_pending(slow)  # inserted (position taken), not committed
        [fast] = seed(db, 1, seal=False)
        assert audit.seal_pending(db) == 1
        slow.commit()
    finally:
        slow.close()
    assert audit.seal_pending(db) == 1
    with db.transaction() as s:
        order = s.execute(select(EVENTS.c.action, EVENTS.c.position, EVENTS.c.seq)
                          .order_by(EVENTS.c.seq)).all()
    assert [(a, q) for a, _, q in order] == [("test.thing.update", 1), ("late", 2)]
    assert order[1].position < order[0].position  # recorded first, sealed second
    assert verify(db).ok and fast


CHILD = r"""
import sys, time
from sqlalchemy import event
from aicloud.platform import audit
from aicloud.shared.db import Database

db = Database(sys.argv[1])
updates = 0

@event.listens_for(db.engine, "after_cursor_execute")
def pause_in_the_second_batch(conn, cursor, statement, params, context, executemany):
    global updates
    if statement.lstrip().upper().startswith("UPDATE AUDIT_EVENTS"):
        updates += 1
        if updates == 2:  # batch 2's events are sealed, its head not yet moved
            print("paused", flush=True)
            time.sleep(300)

audit.seal_pending(db, batch_size=3)
"""


def test_a_sigkilled_sealer_leaves_a_chain_the_next_one_completes(db: Database) -> None:
    seed(db, 10, seal=False)
    child = subprocess.Popen([sys.executable, "-c", CHILD, db.url], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None
        line = child.stdout.readline()
        assert line.strip() == "paused", child.stderr.read() if child.stderr else line
        os.kill(child.pid, signal.SIGKILL)
        assert child.wait(30) == -signal.SIGKILL
    finally:
        if child.poll() is None:
            child.kill()
    after_crash = verify(db)  # batch 1 committed; batch 2 rolled back whole
    assert after_crash.ok, after_crash.first_break
    assert (after_crash.events_checked, after_crash.head_seq, after_crash.unsealed) == (3, 3, 7)
    assert audit.seal_pending(db) == 7
    _sealed_exactly_once_ids(db, 10)


def _sealed_exactly_once_ids(db: Database, total: int) -> None:
    with db.transaction() as s:
        seqs = list(s.scalars(select(EVENTS.c.seq).order_by(EVENTS.c.position)))
    assert seqs == list(range(1, total + 1))
    result = verify(db)
    assert result.ok and result.events_checked == total and result.unsealed == 0


def test_a_checkpoint_seals_first_and_signs_only_sealed_events(db: Database) -> None:
    seed(db, 3)
    seed(db, 2, seal=False)
    cp = checkpoint(db)
    assert (cp.seq, cp.event_count) == (5, 5)
    result = verify(db)
    assert result.ok and result.unsealed == 0 and result.checkpoints_checked == 1


def test_verify_names_events_a_stopped_sealer_left_unsealed(db: Database) -> None:
    seed(db, 2)
    [waiting] = seed(db, 1, seal=False)
    fresh = verify(db)
    assert fresh.ok and fresh.unsealed == 1 and fresh.events_checked == 2
    later = audit.verify_chain(db, {KEY.key_id: KEY.public_key},
                               now=utcnow() + timedelta(minutes=5))
    assert not later.ok and later.first_break is not None
    brk = later.first_break
    assert (brk.kind, brk.event_id) == ("unsealed", waiting)
    assert "no sealer is running" in brk.message and "would not show" in brk.message
    audit.seal_pending(db)
    assert audit.verify_chain(db, {KEY.key_id: KEY.public_key},
                              now=utcnow() + timedelta(minutes=5)).ok


def test_the_database_allows_one_seal_and_nothing_else(db: Database) -> None:
    """The trigger lets the sealer set seq, prev_hash and hash once; an unsealed event's
    content cannot be edited, nor a sealed one resealed, nor either deleted."""
    seed(db, 1)
    [unsealed] = seed(db, 1, seal=False)
    attempts = [
        sa.update(EVENTS).where(EVENTS.c.id == unsealed).values(action="covered.up"),
        sa.update(EVENTS).where(EVENTS.c.id == unsealed).values(
            seq=2, prev_hash="0" * 64, hash="1" * 64, outcome="denied"),
        sa.update(EVENTS).where(EVENTS.c.seq == 1).values(seq=1, hash="2" * 64),
        sa.delete(EVENTS).where(EVENTS.c.id == unsealed),
    ]
    for stmt in attempts:
        with pytest.raises(sa.exc.DBAPIError, match="append-only"), db.engine.begin() as c:
            c.execute(stmt)
    assert audit.seal_pending(db) == 1 and verify(db).ok


def test_the_controller_seals_what_the_request_path_wrote(ctx: AppContext) -> None:
    sealer = next(c for c in ctx.controllers() if c.name == "audit-sealer")
    assert sealer.interval_seconds == ctx.settings.audit_seal_interval_seconds <= 1
    assert sealer.run_once() == 0
    seed(ctx.db, 4, per_txn=2, seal=False)
    assert audit.has_unsealed(ctx.db)
    assert sealer.run_once() == 4
    assert not audit.has_unsealed(ctx.db) and verify(ctx.db).events_checked == 4
