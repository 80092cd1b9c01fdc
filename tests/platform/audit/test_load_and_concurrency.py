"""10,000 events verify clean; parallel writers never fork the chain."""

from __future__ import annotations

import threading
import time

from sqlalchemy import func, select

from aicloud.platform import audit, iam
from aicloud.platform.audit.models import AuditChainHeadModel, AuditEventModel
from aicloud.platform.audit.service import HEAD_ID
from aicloud.shared.db import Database
from tests.platform.audit.helpers import KEY, checkpoint, seed, verify


def test_ten_thousand_events_verify_clean(db: Database) -> None:
    seed(db, 5000, per_txn=2500)
    checkpoint(db)
    seed(db, 5000, per_txn=2500)
    checkpoint(db)
    t0 = time.perf_counter()
    progress: list[tuple[int, int]] = []
    result = verify(db, on_progress=lambda done, total: progress.append((done, total)))
    elapsed = time.perf_counter() - t0
    assert result.ok, result.first_break
    assert (result.events_checked, result.checkpoints_checked) == (10_000, 2)
    assert progress[-1] == (10_000, 10_000) and len(progress) > 1
    assert elapsed < 20, f"verifying 10k events took {elapsed:.1f}s"


WRITERS, TXNS = 8, 12


def test_parallel_writers_never_fork_the_chain(db: Database) -> None:
    """Each writer creates a user (which records iam.user.create) and records a second
    event in the same transaction."""
    errors: list[BaseException] = []
    start = threading.Barrier(WRITERS)

    def writer(w: int) -> None:
        try:
            start.wait()
            for i in range(TXNS):
                with db.transaction() as s:
                    user = iam.create_user(s, email=f"w{w}-{i}@example.io",
                                           actor=audit.Actor.system(f"writer-{w}"))
                    audit.record(s, actor=audit.Actor.system(f"writer-{w}"),
                                 action="test.second", target_type="user", target_id=user.id)
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(WRITERS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors
    total = WRITERS * TXNS * 2
    assert audit.seal_pending(db) == total
    with db.transaction() as s:
        seqs = list(s.scalars(select(AuditEventModel.seq).order_by(AuditEventModel.seq)))
        per_user = dict(s.execute(select(AuditEventModel.target_id, func.count())
                                  .where(AuditEventModel.target_type == "user")
                                  .group_by(AuditEventModel.target_id)).all())
    assert seqs == list(range(1, total + 1))
    assert len(per_user) == WRITERS * TXNS and set(per_user.values()) == {2}
    result = verify(db)
    assert result.ok and result.events_checked == total


def test_a_session_reused_across_transactions_never_forks(db: Database) -> None:
    """Sessions keep loaded objects across commits (expire_on_commit=False): a session that
    still holds the head row must not seal after its stale seq and hash."""
    session = db.session()
    try:
        with session.begin():
            audit.record(session, actor=audit.Actor.system("a"), action="one",
                         target_type="t", target_id="1")
        audit.seal_pending(db)
        with session.begin():
            held = session.get(AuditChainHeadModel, HEAD_ID)  # e.g. a status read
        assert held is not None and held.seq == 1
        seed(db, 1)  # another session moves the head
        with session.begin():
            audit.record(session, actor=audit.Actor.system("a"), action="three",
                         target_type="t", target_id="3")
        with session.begin():
            assert audit.seal_pending(session) == 1
    finally:
        session.close()
    assert verify(db).events_checked == 3


def test_an_event_recorded_before_any_statement_is_rolled_back_with_it(db: Database) -> None:
    session = db.session()
    try:
        audit.record(session, actor=audit.Actor.system("a"), action="dropped",
                     target_type="t", target_id="1")
        session.rollback()
        with session.begin():
            pass
    finally:
        session.close()
    assert verify(db).events_checked == 0


def test_parallel_checkpoints_and_writers_agree(db: Database) -> None:
    """Checkpoints taken while writers append always sign a state the chain really had."""
    stop = threading.Event()
    errors: list[BaseException] = []

    def checkpointer() -> None:
        try:
            while True:
                last = stop.is_set()  # one more checkpoint after the writers are done
                with db.transaction() as s:
                    audit.create_checkpoint(s, KEY)
                if last:
                    return
        except BaseException as exc:
            errors.append(exc)

    cp_thread = threading.Thread(target=checkpointer)
    cp_thread.start()
    threads = [threading.Thread(target=seed, args=(db, 10)) for _ in range(WRITERS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    stop.set()
    cp_thread.join(30)
    assert not errors, errors
    result = verify(db)
    assert result.ok, result.first_break
    assert result.events_checked == WRITERS * 10 and result.checkpoints_checked >= 1
