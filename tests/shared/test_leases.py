"""Leases on a real table, on SQLite and PostgreSQL; concurrent claimers on both."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import timedelta

import pytest
import sqlalchemy as sa
from sqlalchemy import String
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from aicloud.shared.clock import FakeClock
from aicloud.shared.db import Database
from aicloud.shared.leases import (
    LeaseColumns,
    claim,
    get_leased,
    heartbeat,
    lease_owner_name,
    release,
    release_all,
    update_leased,
)

TTL = timedelta(seconds=30)


class _TestBase(DeclarativeBase):
    """Kept out of the application metadata, so the schema-drift test never sees it."""


class Job(LeaseColumns, _TestBase):
    __tablename__ = "lease_test_jobs"

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    status: Mapped[str] = mapped_column(String(16), default="pending")


def _with_table(db: Database) -> Iterator[Database]:
    _TestBase.metadata.drop_all(db.engine)
    _TestBase.metadata.create_all(db.engine)
    yield db
    _TestBase.metadata.drop_all(db.engine)


@pytest.fixture
def jobs(db: Database) -> Iterator[Database]:
    yield from _with_table(db)


@pytest.fixture
def pg_jobs(_pg_session_db: Database) -> Iterator[Database]:
    yield from _with_table(_pg_session_db)


def _add(db: Database, n: int) -> None:
    with db.transaction() as s:
        s.add_all([Job(id=i, status="pending") for i in range(1, n + 1)])


def _row(db: Database, row_id: int) -> Job:
    with db.transaction() as s:
        job = s.get(Job, row_id)
        assert job is not None
        s.expunge(job)
        return job


def test_claim_takes_due_rows_in_order_and_only_once(jobs: Database) -> None:
    _add(jobs, 5)
    with jobs.transaction() as s:
        s.execute(sa.update(Job).where(Job.id == 2).values(status="done"))
    clock = FakeClock()
    with jobs.transaction() as s:
        first = claim(s, Job, owner="w1", limit=3, ttl=TTL, clock=clock,
                      where=[Job.status == "pending"])
    assert [lease.row_id for lease in first] == [1, 3, 4]
    assert len({lease.token for lease in first}) == 3
    stored = _row(jobs, 3)
    assert stored.lock_token == first[1].token
    assert stored.lock_owner == "w1"
    assert stored.lock_expires_at == clock.now() + TTL

    with jobs.transaction() as s:
        second = claim(s, Job, owner="w2", limit=10, ttl=TTL, clock=clock,
                       where=[Job.status == "pending"])
    assert [lease.row_id for lease in second] == [5]


def test_the_mixin_indexes_the_expiry(jobs: Database) -> None:
    indexes = sa.inspect(jobs.engine).get_indexes("lease_test_jobs")
    assert [(i["name"], i["column_names"]) for i in indexes] == [
        ("ix_lease_test_jobs_lock_expires_at", ["lock_expires_at"])]


def test_update_and_release_are_conditional_on_the_token(jobs: Database) -> None:
    _add(jobs, 1)
    clock = FakeClock()
    with jobs.transaction() as s:
        (lease,) = claim(s, Job, owner="w1", limit=1, ttl=TTL, clock=clock)
    with jobs.transaction() as s:
        assert update_leased(s, Job, lease, {"status": "running"})
    assert _row(jobs, 1).status == "running"

    with jobs.transaction() as s:
        assert release(s, Job, lease, {"status": "done"})
    row = _row(jobs, 1)
    assert (row.status, row.lock_token, row.lock_owner, row.lock_expires_at) == (
        "done", None, None, None)
    # Released: the old token no longer writes anything.
    with jobs.transaction() as s:
        assert not update_leased(s, Job, lease, {"status": "stale"})
        assert not release(s, Job, lease)
    assert _row(jobs, 1).status == "done"


def test_an_expired_lease_is_reclaimed_and_the_old_holder_is_refused(jobs: Database) -> None:
    _add(jobs, 1)
    clock = FakeClock()
    with jobs.transaction() as s:
        (old,) = claim(s, Job, owner="w1", limit=1, ttl=TTL, clock=clock)
    # Still leased: nobody else gets it.
    clock.advance(29)
    with jobs.transaction() as s:
        assert claim(s, Job, owner="w2", limit=1, ttl=TTL, clock=clock) == []
    clock.advance(1)  # expiry is inclusive: at expires_at the row is free again
    with jobs.transaction() as s:
        (new,) = claim(s, Job, owner="w2", limit=1, ttl=TTL, clock=clock)
    assert new.row_id == old.row_id and new.token != old.token

    with jobs.transaction() as s:
        assert get_leased(s, Job, old) is None
        assert get_leased(s, Job, new).lock_owner == "w2"
        assert not update_leased(s, Job, old, {"status": "from-w1"})
        assert heartbeat(s, Job, [old], ttl=TTL, clock=clock) == []
        assert not release(s, Job, old)
        assert update_leased(s, Job, new, {"status": "from-w2"})
    row = _row(jobs, 1)
    assert (row.status, row.lock_owner, row.lock_token) == ("from-w2", "w2", new.token)


def test_heartbeat_extends_only_held_leases(jobs: Database) -> None:
    _add(jobs, 2)
    clock = FakeClock()
    with jobs.transaction() as s:
        a, b = claim(s, Job, owner="w1", limit=2, ttl=TTL, clock=clock)
    with jobs.transaction() as s:
        assert release(s, Job, b)
    clock.advance(20)
    with jobs.transaction() as s:
        kept = heartbeat(s, Job, [a, b], ttl=TTL, clock=clock)
    assert [lease.row_id for lease in kept] == [a.row_id]
    assert kept[0].expires_at == clock.now() + TTL
    assert _row(jobs, a.row_id).lock_expires_at == clock.now() + TTL
    # Extended past the original expiry: another claimer still cannot take it.
    clock.advance(15)
    with jobs.transaction() as s:
        taken = claim(s, Job, owner="w2", limit=5, ttl=TTL, clock=clock)
    assert [lease.row_id for lease in taken] == [b.row_id]


def _updates(db: Database) -> tuple[list[str], object]:
    seen: list[str] = []

    def on_execute(conn, cursor, statement, *args):  # type: ignore[no-untyped-def]
        if statement.lstrip().upper().startswith("UPDATE"):
            seen.append(statement)
    sa.event.listen(db.engine, "before_cursor_execute", on_execute)
    return seen, on_execute


def test_heartbeat_and_release_all_take_one_statement_for_many_leases(jobs: Database) -> None:
    """A worker holding many leases renews (and hands back) all of them with one UPDATE:
    what keeps an idle node agent at one write per heartbeat. Leases lost meanwhile (taken
    after expiry, released) are reported as lost, even when their row id is still passed."""
    _add(jobs, 40)
    clock = FakeClock()
    with jobs.transaction() as s:
        held = claim(s, Job, owner="w1", limit=40, ttl=TTL, clock=clock)
    with jobs.transaction() as s:  # one lease released, one row re-claimed by w2 later
        assert release(s, Job, held[5])
        s.execute(sa.update(Job).where(Job.id == held[7].row_id)
                  .values(lock_expires_at=clock.now()))
    with jobs.transaction() as s:
        (taken,) = claim(s, Job, owner="w2", limit=1, ttl=TTL, clock=clock,
                         where=[Job.id == held[7].row_id])
    clock.advance(10)
    seen, hook = _updates(jobs)
    try:
        with jobs.transaction() as s:
            kept = heartbeat(s, Job, held, ttl=TTL, clock=clock)
        assert len(seen) == 1, seen
        assert sorted(lease.row_id for lease in kept) == sorted(
            lease.row_id for i, lease in enumerate(held) if i not in (5, 7))
        assert all(lease.expires_at == clock.now() + TTL for lease in kept)
        assert _row(jobs, taken.row_id).lock_owner == "w2"  # the stale token did not renew it
        assert _row(jobs, taken.row_id).lock_expires_at == taken.expires_at
        seen.clear()
        with jobs.transaction() as s:
            released = release_all(s, Job, held)
        assert len(seen) == 1 and sorted(lease.row_id for lease in released) == sorted(
            lease.row_id for lease in kept)
    finally:
        sa.event.remove(jobs.engine, "before_cursor_execute", hook)
    assert _row(jobs, taken.row_id).lock_token == taken.token  # w2's lease untouched
    with jobs.transaction() as s:
        again = claim(s, Job, owner="w3", limit=100, ttl=TTL, clock=clock)
    assert len(again) == 39  # all but w2's
    with jobs.transaction() as s:
        assert heartbeat(s, Job, [], ttl=TTL, clock=clock) == []


def test_lease_columns_are_reserved_in_updates(jobs: Database) -> None:
    _add(jobs, 1)
    with jobs.transaction() as s:
        (lease,) = claim(s, Job, owner="w1", limit=1, ttl=TTL)
        with pytest.raises(ValueError, match="lock_token"):
            update_leased(s, Job, lease, {"lock_token": None})
        with pytest.raises(ValueError, match="lock_owner"):
            release(s, Job, lease, {"lock_owner": "x"})
    assert lease_owner_name("gpuaas").endswith(":gpuaas")


def test_parallel_claimers_never_share_a_row(jobs: Database) -> None:
    """Claimers that hold their claim transaction open while others claim (PostgreSQL: rows
    locked and skipped; SQLite: serialized by BEGIN IMMEDIATE) never get the same row."""
    n_rows, n_workers = 60, 4
    _add(jobs, n_rows)
    claimed: dict[str, list[int]] = {f"w{i}": [] for i in range(n_workers)}
    start = threading.Barrier(n_workers)
    errors: list[BaseException] = []

    def work(name: str) -> None:
        try:
            start.wait()
            while True:
                with jobs.transaction() as s:
                    got = claim(s, Job, owner=name, limit=3, ttl=TTL)
                    # Hold the transaction (and the row locks) so the others must skip.
                    threading.Event().wait(0.005)
                if not got:
                    return
                claimed[name].extend(lease.row_id for lease in got)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(name,)) for name in claimed]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    every = [row_id for ids in claimed.values() for row_id in ids]
    assert sorted(every) == list(range(1, n_rows + 1))  # each row exactly once
    if jobs.dialect == "postgresql":
        # SKIP LOCKED lets them work side by side rather than one taking everything.
        assert sum(1 for ids in claimed.values() if ids) >= 2
    with jobs.transaction() as s:
        owners = {row.id: row.lock_owner for row in s.execute(sa.select(Job.id, Job.lock_owner))}
    assert all(owners[row_id] == name for name, ids in claimed.items() for row_id in ids)


def test_skip_locked_leaves_rows_of_an_open_claim_to_others(pg_jobs: Database) -> None:
    """On PostgreSQL a claim in progress (not yet committed) does not block a second one.
    (SQLite has no row locks; BEGIN IMMEDIATE serializes whole transactions instead.)"""
    _add(pg_jobs, 4)
    with pg_jobs.transaction() as s1:
        first = claim(s1, Job, owner="w1", limit=2, ttl=TTL)
        with pg_jobs.transaction() as s2:  # a second connection while s1 is still open
            # Without SKIP LOCKED this would wait on s1 forever; fail fast instead.
            s2.execute(sa.text("SET LOCAL lock_timeout = '3s'"))
            second = claim(s2, Job, owner="w2", limit=4, ttl=TTL)
    assert [lease.row_id for lease in first] == [1, 2]
    assert [lease.row_id for lease in second] == [3, 4]
