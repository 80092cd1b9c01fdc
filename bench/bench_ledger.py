"""Ledger posting throughput against a raw INSERT of the same rows into a plain table.

Both sides write with the same set-based writer (shared.db.bulk: binary COPY on PostgreSQL,
executemany on SQLite), so the ratio is the cost of the ledger itself: validation, locks,
unique keys, indexes, the balance cache.
"""

from __future__ import annotations

import time

import sqlalchemy as sa

from aicloud.platform import billing, iam
from aicloud.platform.audit import Actor
from aicloud.shared.db import Database, bulk
from aicloud.shared.ids import new_id
from bench.dbs import each_database
from bench.harness import Measurement

BATCH = 1_000
BATCHES = 10
WALLETS = 50
REPEAT = 5


def _setup(db: Database) -> tuple[list[str], str]:
    with db.transaction() as s:
        wallets = []
        for i in range(WALLETS):
            # Billing makes wallets only for organizations that exist in IAM.
            org = iam.create_org(s, f"bench-{i}", actor=Actor.system("bench")).id
            billing.top_up(s, actor=Actor.system("bench"), org_id=org,
                           amount=10**15, currency="USD", idempotency_key=f"fund-{i}")
            wallets.append(billing.org_wallet(s, org, "USD").id)
        return wallets, billing.platform_account(s, "revenue", "USD").id


def _ledger_rate(db: Database, wallets: list[str], revenue: str, run: int) -> float:
    t0 = time.perf_counter()
    for b in range(BATCHES):
        specs = [billing.TransferSpec(wallets[i % WALLETS], revenue, 1 + i, "USD",
                                      f"bench-{run}-{b}-{i}", "transfer") for i in range(BATCH)]
        with db.transaction() as s:
            billing.post_transfers(s, specs)
    return BATCH * BATCHES / (time.perf_counter() - t0)


def _plain_table(db: Database) -> sa.Table:
    meta = sa.MetaData()
    plain = sa.Table(
        "bench_plain_transfers", meta,
        sa.Column("id", sa.String(40), primary_key=True),
        *(sa.Column(c, sa.String(255)) for c in (
            "debit_account_id", "credit_account_id", "currency", "idempotency_key", "reason",
            "metadata_json")),
        sa.Column("amount", sa.BigInteger), sa.Column("posted_at", sa.String(40)))
    meta.create_all(db.engine)
    return plain


def _raw_rate(db: Database, plain: sa.Table, run: int) -> float:
    t0 = time.perf_counter()
    for b in range(BATCHES):
        rows = [{"id": new_id("xfer"), "debit_account_id": f"a{i % WALLETS}",
                 "credit_account_id": "rev", "currency": "USD",
                 "idempotency_key": f"bench-{run}-{b}-{i}", "reason": "transfer",
                 "metadata_json": "{}", "amount": 1 + i, "posted_at": "2026-01-01"}
                for i in range(BATCH)]
        with db.engine.begin() as c:
            bulk.insert_rows(c, plain, rows)
    return BATCH * BATCHES / (time.perf_counter() - t0)


def run() -> list[Measurement]:
    out = []
    with each_database() as dbs:
        for name, db in dbs:
            plain = _plain_table(db)
            wallets, revenue = _setup(db)
            # Best of interleaved runs: the machine is shared, noise hits both sides alike.
            raw = ours = 0.0
            for run_no in range(REPEAT):
                raw = max(raw, _raw_rate(db, plain, run_no))
                ours = max(ours, _ledger_rate(db, wallets, revenue, run_no))
            out.append(Measurement(
                f"ledger post_transfers, batches of {BATCH} ({name})", ours, "transfers/s",
                f"raw INSERT of the same rows ({name})", raw, target=">= 0.50x of raw"))
    return out
