"""Audit append rate on PostgreSQL with 8 concurrent writers, against the same inserts into a
plain unchained table; and verification rate against reading the same rows without hashing.

Needs PostgreSQL (AICLOUD_BENCH_POSTGRES_URL, default postgres@127.0.0.1:5432); a scratch
database is created and dropped. Without PostgreSQL it measures nothing and says so.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy import BigInteger, String, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from aicloud.platform import audit
from aicloud.platform.audit.chain import canonical_json
from aicloud.platform.audit.models import AuditEventModel
from aicloud.shared.clock import utcnow
from aicloud.shared.db import Database, UTCDateTime
from aicloud.shared.ids import new_id
from bench.dbs import postgres_database
from bench.harness import Measurement

WRITERS = 8
TXNS_PER_WRITER = 100
REPEAT = 2
ACTOR = audit.Actor(id="user_bench", ip="10.0.0.1", user_agent="bench", request_id="req_b")


class _PlainBase(DeclarativeBase):
    pass


class PlainEvent(_PlainBase):
    """The baseline: the same columns and the same ORM inserts, with no chain and no lock."""

    __tablename__ = "bench_plain_events"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    seq: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    occurred_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    actor_id: Mapped[str | None] = mapped_column(String(64), nullable=True, index=True)
    actor_kind: Mapped[str] = mapped_column(String(32))
    api_key_id: Mapped[str | None] = mapped_column(String(40), nullable=True)
    ip: Mapped[str | None] = mapped_column(String(64), nullable=True)
    user_agent: Mapped[str | None] = mapped_column(String(512), nullable=True)
    request_id: Mapped[str | None] = mapped_column(String(128), nullable=True)
    action: Mapped[str] = mapped_column(String(128), index=True)
    target_type: Mapped[str] = mapped_column(String(64))
    target_id: Mapped[str] = mapped_column(String(128), index=True)
    scope_path: Mapped[str] = mapped_column(String(512), index=True)
    outcome: Mapped[str] = mapped_column(String(16))
    changes: Mapped[str] = mapped_column(Text)
    details: Mapped[str] = mapped_column(Text)
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64))


def _changes(i: int) -> dict[str, dict[str, object]]:
    return audit.diff({"size": i, "state": "running"}, {"size": i + 1, "state": "stopped"})


def _chained(session: Session, i: int) -> None:
    audit.record(session, actor=ACTOR, action="bench.thing.update", target_type="thing",
                 target_id=f"t{i}", scope_path="/org_bench/prj_bench", changes=_changes(i))


def _plain(session: Session, i: int) -> None:
    session.add(PlainEvent(
        id=new_id("aud"), occurred_at=utcnow(), actor_id=ACTOR.id, actor_kind=ACTOR.kind,
        ip=ACTOR.ip, user_agent=ACTOR.user_agent, request_id=ACTOR.request_id,
        action="bench.thing.update", target_type="thing", target_id=f"t{i}",
        scope_path="/org_bench/prj_bench", outcome="success",
        changes=canonical_json(_changes(i)), details="{}", prev_hash="", hash=""))


def _concurrent_rate(db: Database, write: Callable[[Session, int], None],
                     events_per_txn: int) -> float:
    """Best-of-REPEAT events/s of WRITERS threads each committing TXNS_PER_WRITER txns."""
    return max(_one_run(db, write, events_per_txn) for _ in range(REPEAT))


def _one_run(db: Database, write: Callable[[Session, int], None], events_per_txn: int) -> float:
    barrier = threading.Barrier(WRITERS + 1)
    errors: list[BaseException] = []

    def writer() -> None:
        try:
            barrier.wait()
            for t in range(TXNS_PER_WRITER):
                with db.transaction() as s:
                    for e in range(events_per_txn):
                        write(s, t * events_per_txn + e)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=writer) for _ in range(WRITERS)]
    for th in threads:
        th.start()
    barrier.wait()
    t0 = time.perf_counter()
    for th in threads:
        th.join()
    elapsed = time.perf_counter() - t0
    if errors:
        raise errors[0]
    return WRITERS * TXNS_PER_WRITER * events_per_txn / elapsed


def _read_rate(db: Database) -> tuple[float, int]:
    """Rows/s of streaming the chain in the same batches verify uses, without hashing."""
    table = AuditEventModel.__table__
    t0 = time.perf_counter()
    n, after = 0, 0
    while True:
        with db.transaction() as s:
            rows = s.execute(sa.select(table).where(table.c.seq > after)
                             .order_by(table.c.seq).limit(5000)).all()
        n += len(rows)
        if len(rows) < 5000:
            break
        after = rows[-1].seq
    return n / (time.perf_counter() - t0), n


def run() -> list[Measurement]:
    with postgres_database() as db:
        if db is None:
            return []
        _PlainBase.metadata.create_all(db.engine)
        results: list[Measurement] = []
        for per_txn in (1, 10):
            ours = _concurrent_rate(db, _chained, per_txn)
            base = _concurrent_rate(db, _plain, per_txn)
            results.append(Measurement(
                f"audit append, PostgreSQL, {WRITERS} writers, {per_txn} event(s)/txn",
                ours, "events/s", "same inserts, plain unchained table", base))
        key = audit.SigningKey.from_b64(audit.generate_key_b64())
        with db.transaction() as s:
            audit.create_checkpoint(s, key)
        t0 = time.perf_counter()
        result = audit.verify_chain(db, {key.key_id: key.public_key})
        verify_rate = result.events_checked / (time.perf_counter() - t0)
        assert result.ok, result.first_break
        read_rate, _ = _read_rate(db)
        results.append(Measurement(
            f"audit verify, PostgreSQL, {result.events_checked:,} events",
            verify_rate, "events/s", "streaming the same rows without hashing", read_rate))
        return results


if __name__ == "__main__":
    for m in run():
        ratio = f"{m.ratio:.2f}x" if m.ratio else "-"
        print(f"{m.name}: {m.value:,.0f} {m.unit} vs {m.baseline_name}: "
              f"{m.baseline_value:,.0f} {m.unit} (ratio {ratio})")
