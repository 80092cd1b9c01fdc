"""Audit append rate on PostgreSQL with 8 concurrent writers, against the same inserts into a
plain unchained table; how long events wait to be sealed; and verification rate against
reading the same rows without hashing.

Our path is the real one: writers record events in their transaction (inserted unsealed), while
a sealer process does what the audit-sealer controller does (a pass every
``audit_seal_interval_seconds``, one transaction per batch), on the same machine and database.
The seal latency of an event is from its writer's commit to the commit of the batch that
sealed it.

Needs PostgreSQL (AICLOUD_BENCH_POSTGRES_URL, default postgres@127.0.0.1:5432); a scratch
database is created and dropped. Without PostgreSQL it measures nothing and says so.
"""

from __future__ import annotations

import multiprocessing
import threading
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy import BigInteger, String, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from aicloud.platform import audit
from aicloud.platform.audit.chain import canonical_json
from aicloud.platform.audit.models import AuditEventModel
from aicloud.platform.audit.sealer import DEFAULT_BATCH, seal_batch
from aicloud.platform.audit.service import lock_head
from aicloud.shared.clock import utcnow
from aicloud.shared.config import Settings
from aicloud.shared.db import Database, UTCDateTime
from aicloud.shared.ids import new_id
from bench.dbs import postgres_database
from bench.harness import Measurement, percentiles

WRITERS = 8
# 8 writers x 125 transactions x 10 events = 10,000 seal latencies: enough for a p99.
TXNS_PER_WRITER = 125
REPEAT = 2
ACTOR = audit.Actor(id="user_bench", ip="10.0.0.1", user_agent="bench", request_id="req_b")
SEAL_INTERVAL = Settings.model_fields["audit_seal_interval_seconds"].default


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


def _chained(session: Session, i: int) -> str:
    return audit.record(session, actor=ACTOR, action="bench.thing.update", target_type="thing",
                        target_id=f"t{i}", scope_path="/org_bench/prj_bench",
                        changes=_changes(i)).id


def _plain(session: Session, i: int) -> str:
    event = PlainEvent(
        id=new_id("aud"), occurred_at=utcnow(), actor_id=ACTOR.id, actor_kind=ACTOR.kind,
        ip=ACTOR.ip, user_agent=ACTOR.user_agent, request_id=ACTOR.request_id,
        action="bench.thing.update", target_type="thing", target_id=f"t{i}",
        scope_path="/org_bench/prj_bench", outcome="success",
        changes=canonical_json(_changes(i)), details="{}", prev_hash="", hash="")
    session.add(event)
    return event.id


class _Sealer:
    """The audit-sealer controller's loop in its own process (as `aicloud worker` runs it),
    noting when each event got sealed (CLOCK_MONOTONIC is one clock for every process)."""

    def __init__(self, db: Database):
        ctx = multiprocessing.get_context("spawn")
        self._stop = ctx.Event()
        self._recv, send = ctx.Pipe(duplex=False)
        self._process = ctx.Process(target=_seal_loop, args=(db.url, self._stop, send))
        self.sealed_at: dict[str, float] = {}

    def __enter__(self) -> _Sealer:
        self._process.start()
        if self._recv.recv() != "ready":
            raise RuntimeError("the sealer process did not start")
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        result = self._recv.recv()
        self._process.join(30)
        if isinstance(result, str):
            raise RuntimeError(f"the sealer process failed: {result}")
        self.sealed_at = result


def _seal_loop(url: str, stop: Any, out: Any) -> None:
    db = Database(url)
    sealed_at: dict[str, float] = {}
    out.send("ready")
    try:
        while True:
            stopping = stop.is_set()
            while audit.has_unsealed(db):
                with db.transaction() as s:
                    ids = seal_batch(s, lock_head(s), DEFAULT_BATCH)
                sealed_at.update(dict.fromkeys(ids, time.monotonic()))
            if stopping:
                break
            stop.wait(SEAL_INTERVAL)
    except Exception as exc:  # reported by the parent
        out.send(repr(exc))
        return
    finally:
        db.dispose()
    out.send(sealed_at)


def _one_run(db: Database, write: Callable[[Session, int], str], events_per_txn: int,
             committed_at: dict[str, float]) -> float:
    """Events/s of WRITERS threads each committing TXNS_PER_WRITER transactions."""
    barrier = threading.Barrier(WRITERS + 1)
    errors: list[BaseException] = []

    def writer() -> None:
        try:
            barrier.wait()
            for t in range(TXNS_PER_WRITER):
                with db.transaction() as s:
                    ids = [write(s, t * events_per_txn + e) for e in range(events_per_txn)]
                committed_at.update(dict.fromkeys(ids, time.monotonic()))
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


def _ours(db: Database, events_per_txn: int) -> tuple[float, list[float]]:
    """Best-of-REPEAT rate with the sealer running, and every event's seal latency (s)."""
    best, latencies = 0.0, []
    for _ in range(REPEAT):
        committed: dict[str, float] = {}
        with _Sealer(db) as sealer:
            best = max(best, _one_run(db, _chained, events_per_txn, committed))
        missing = committed.keys() - sealer.sealed_at.keys()
        assert not missing, f"{len(missing)} event(s) never sealed"
        latencies += [sealer.sealed_at[i] - t for i, t in committed.items()]
    return best, latencies


def _baseline(db: Database, events_per_txn: int) -> float:
    return max(_one_run(db, _plain, events_per_txn, {}) for _ in range(REPEAT))


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
            ours, latencies = _ours(db, per_txn)
            base = _baseline(db, per_txn)
            results.append(Measurement(
                f"audit append, PostgreSQL, {WRITERS} writers, {per_txn} event(s)/txn, "
                "sealer running", ours, "events/s", "same inserts, plain unchained table", base,
                target=">= 0.7x"))
            ms = [x * 1000 for x in latencies]
            for name, value in [*percentiles(ms).items(), ("max", max(ms))]:
                results.append(Measurement(
                    f"audit seal latency {name}, {per_txn} event(s)/txn "
                    f"({len(ms):,} events, commit to sealed)", value, "ms",
                    higher_is_better=False, target="max <= 1000 ms"))
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
        print(f"{m.name}: {m.value:,.1f} {m.unit} vs {m.baseline_name}: "
              f"{m.baseline_value or 0:,.1f} {m.unit} (ratio {ratio})")
