"""A month's statement over a long wallet history against one over a short history.

Two organizations' wallets in one database, each with the same 5,000 transfers in the month
of the statement; before it, one wallet has a short history (10,000 transfers in all) and the
other a long one (``AICLOUD_BENCH_STATEMENT_TRANSFERS``, default 1,000,000, spread over 24
months). The statement of the month (ended, so its closing exists) is built through
``build_statement`` in a read-only transaction (as the API serves it), best of 5, after the
months have been closed as the billing-period-close controller closes them (closing the whole
long history once is reported on its own row).
Target: the long history's statement within 1.5x of the short one's (ratio >= 0.67).
The second row is the opening balance summed over the whole history, what statements did
before closings, against the same short-history statement.

Transfers are top-ups and adjustments (a usage line costs the same whatever the history).
"""

from __future__ import annotations

import itertools
import os
import time
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa

from aicloud.platform import billing, iam
from aicloud.platform.audit import Actor
from aicloud.platform.billing.ledger import touches
from aicloud.platform.billing.models import TransferModel
from aicloud.shared.db import Database
from bench.dbs import each_database
from bench.harness import Measurement

LONG = int(os.environ.get("AICLOUD_BENCH_STATEMENT_TRANSFERS", "1000000"))
SHORT = 10_000
IN_MONTH = 5_000
MONTHS = 24
PERIOD = "2026-01"
START = datetime(2026, 1, 1, tzinfo=UTC)
NOW = datetime(2026, 2, 10, tzinfo=UTC)  # the statement's month has ended
AGENT = Actor.system("bench")
BATCH = 10_000


def _accounts(db: Database) -> tuple[list[str], str, str, str, str]:
    with db.transaction() as s:
        orgs = [iam.create_org(s, f"statements-{i}", actor=AGENT).id for i in range(2)]
        wallets = [billing.org_wallet(s, org, "USD").id for org in orgs]
        funding = billing.platform_account(s, "funding", "USD").id
        expense = billing.platform_account(s, "adjustments", "USD").id
    return orgs, wallets[0], wallets[1], funding, expense


def _fill(db: Database, wallet: str, funding: str, expense: str, total: int) -> None:
    """``total`` transfers: ``total - IN_MONTH`` over the MONTHS months before PERIOD, then
    IN_MONTH in PERIOD; money in and out alternately, posted through post_transfers."""
    before = total - IN_MONTH
    times = [START - timedelta(days=30 * MONTHS) + timedelta(
        seconds=i * (30 * MONTHS * 86400 - 1) // max(before, 1)) for i in range(before)]
    times += [START + timedelta(seconds=i * (28 * 86400) // IN_MONTH) for i in range(IN_MONTH)]
    # One posting time per batch (post_transfers stamps a batch with one instant); batches
    # are small against a month, and none straddles the statement's month.
    bounds = [*range(0, before, BATCH), before, total]
    for lo, hi in itertools.pairwise(bounds):
        if lo == hi:
            continue
        with db.transaction() as s:
            billing.post_transfers(s, [billing.TransferSpec(
                debit_account_id=funding if i % 2 == 0 else wallet,
                credit_account_id=wallet if i % 2 == 0 else expense,
                amount=1_000 + i % 7, currency="USD",
                idempotency_key=f"{wallet}-{i}", reason="top_up" if i % 2 == 0 else "adjustment")
                for i in range(lo, hi)], enforce_floor=False, now=times[lo])


def _statement_seconds(db: Database, org: str) -> float:
    t0 = time.perf_counter()
    with db.read_transaction() as s:
        billing.build_statement(s, org_id=org, period=PERIOD)
    return time.perf_counter() - t0


def _close_seconds(db: Database, wallet: str) -> float:
    """What the billing-period-close controller does once for a wallet: close its months."""
    t0 = time.perf_counter()
    with db.transaction() as s:
        billing.close_periods(s, wallet, PERIOD, now=NOW)
    return time.perf_counter() - t0


def _whole_history_opening(db: Database, wallet: str) -> float:
    """What the opening balance cost before closings: a sum over every earlier transfer."""
    T = TransferModel
    t0 = time.perf_counter()
    with db.transaction() as s:
        s.scalar(sa.select(sa.func.sum(sa.case((T.credit_account_id == wallet, T.amount),
                                                else_=-T.amount)))
                 .where(touches(wallet), T.posted_at < START))
    return time.perf_counter() - t0


def run() -> list[Measurement]:
    out = []
    with each_database() as dbs:
        for name, db in dbs:
            (short_org, long_org), short_wallet, long_wallet, funding, expense = _accounts(db)
            _fill(db, short_wallet, funding, expense, SHORT)
            _fill(db, long_wallet, funding, expense, LONG)
            first = _close_seconds(db, long_wallet)
            _close_seconds(db, short_wallet)
            short = min(_statement_seconds(db, short_org) for _ in range(5))
            long = min(_statement_seconds(db, long_org) for _ in range(5))
            scratch = min(_whole_history_opening(db, long_wallet) for _ in range(3))
            with db.transaction() as s:
                a = billing.build_statement(s, org_id=long_org, period=PERIOD)
                assert a.closing_balance == a.opening_balance + a.credits - a.charges
                assert sum(line.transfers for line in a.lines) == IN_MONTH
                assert billing.check_ledger(s).ok
            out.append(Measurement(
                f"statement of a {IN_MONTH:,}-transfer month, {LONG:,}-transfer history "
                f"({name})", long * 1000, "ms",
                f"same month, {SHORT:,}-transfer history ({name})", short * 1000,
                higher_is_better=False, target="within 1.5x (ratio >= 0.67)"))
            out.append(Measurement(
                f"opening balance summed over the {LONG:,}-transfer history, the way "
                f"before closings ({name})", scratch * 1000, "ms",
                f"statement over the {SHORT:,}-transfer history ({name})", short * 1000,
                higher_is_better=False))
            out.append(Measurement(
                f"closing {MONTHS} months of the {LONG:,}-transfer history once, as the "
                f"billing-period-close controller does ({name})", first * 1000, "ms",
                higher_is_better=False))
    return out
