"""Usage ingestion + rating, end to end, against a raw INSERT of the same usage rows."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa

from aicloud.platform import billing
from aicloud.platform.audit import Actor
from aicloud.shared.db import Database, bulk
from bench.dbs import each_database
from bench.harness import Measurement

RECORDS = 20_000
BATCH = 5_000
T0 = datetime(2026, 1, 1, tzinfo=UTC)
AGENT = Actor.system("bench")


def _records(tag: str) -> list[billing.UsageIn]:
    return [billing.UsageIn(
        resource_id=f"inst_{i % 500}", project_id=f"prj_{i % 20}",
        scope_path=f"/org_{i % 5}/dep_{i % 10}/prj_{i % 20}", principal_id=f"user_{i % 50}",
        meter="gpu_seconds", dimension_value="A100", quantity=60,
        window_start=T0 + timedelta(minutes=i), window_end=T0 + timedelta(minutes=i, seconds=60),
        idempotency_key=f"{tag}-{i}", source="bench") for i in range(RECORDS)]


def _setup(db: Database) -> None:
    with db.transaction() as s:
        billing.register_default_meters(s)
        billing.create_price_list(s, actor=AGENT, spec=billing.PriceListCreate(
            currency="USD", effective_from=T0, prices=[billing.PriceIn(
                meter="gpu_seconds", unit_price=2_500_000, per_quantity=3600)]))


def _end_to_end(db: Database) -> float:
    _setup(db)
    records = _records("e2e")  # built before the clock starts: callers send them ready-made
    t0 = time.perf_counter()
    for i in range(0, RECORDS, BATCH):
        with db.transaction() as s:
            billing.ingest_usage(s, records[i:i + BATCH], actor=AGENT)
    rated = billing.rate_until_idle(db, batch_size=BATCH, max_batches=10**6)
    elapsed = time.perf_counter() - t0
    assert rated == RECORDS
    with db.transaction() as s:
        assert billing.check_ledger(s).ok
    return RECORDS / elapsed


def _raw(db: Database) -> float:
    meta = sa.MetaData()
    cols = ["idempotency_key", "resource_id", "project_id", "scope_path", "principal_id",
            "meter", "dimension_value", "source"]
    plain = sa.Table("bench_plain_usage", meta, sa.Column("seq", sa.Integer, primary_key=True),
                     *(sa.Column(c, sa.String(255)) for c in cols),
                     sa.Column("quantity", sa.BigInteger),
                     sa.Column("window_start", sa.DateTime), sa.Column("window_end", sa.DateTime))
    meta.create_all(db.engine)
    rows = [{**{c: getattr(r, c) for c in cols}, "idempotency_key": "raw-" + r.idempotency_key,
             "quantity": r.quantity, "window_start": r.window_start.replace(tzinfo=None),
             "window_end": r.window_end.replace(tzinfo=None)} for r in _records("raw")]
    t0 = time.perf_counter()
    for i in range(0, RECORDS, BATCH):
        with db.engine.begin() as c:
            bulk.insert_rows(c, plain, rows[i:i + BATCH])
    return RECORDS / (time.perf_counter() - t0)


def run() -> list[Measurement]:
    out = []
    with each_database() as dbs:
        for name, db in dbs:
            raw = _raw(db)
            ours = _end_to_end(db)
            out.append(Measurement(
                f"usage ingest + rate + ledger, {RECORDS} records ({name})", ours, "records/s",
                f"raw INSERT of the same usage rows ({name})", raw,
                target=">= 10,000 records/s on SQLite" if name == "sqlite" else None))
    return out
