"""Closing balances per account and month: equal to a from-scratch sum, never changed by a
late transfer, verified by ``ledger check``, and statements built from them equal statements
built from the whole history."""

from __future__ import annotations

import itertools
import threading
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from aicloud.platform import billing
from aicloud.platform.billing.closings import ClosingMismatch, period_end
from aicloud.platform.billing.models import PeriodClosingModel, TransferModel
from aicloud.shared.db import Database
from aicloud.shared.errors import ValidationFailed
from tests.platform.billing.factories import ORG_A, ORG_B

MONTHS = ["2025-01", "2025-02", "2025-03", "2025-04", "2025-05"]
LATE = datetime(2025, 9, 15, tzinfo=UTC)  # "now" for closing: months up to 2025-08 ended


def _at(period: str, day: int, second: int = 0) -> datetime:
    y, m = map(int, period.split("-"))
    return datetime(y, m, day, tzinfo=UTC) + timedelta(seconds=second)


def _accounts(db: Database) -> tuple[str, str, str]:
    with db.transaction() as s:
        wallet = billing.org_wallet(s, ORG_A, "USD").id
        funding = billing.platform_account(s, "funding", "USD").id
        revenue = billing.platform_account(s, "revenue", "USD").id
    return wallet, funding, revenue


def _post(db: Database, specs: Sequence[tuple[str, str, int, datetime]], tag: str) -> None:
    for i, (debit, credit, amount, at) in enumerate(specs):
        with db.transaction() as s:
            billing.post_transfers(s, [billing.TransferSpec(
                debit_account_id=debit, credit_account_id=credit, amount=amount,
                currency="USD", idempotency_key=f"{tag}-{i}", reason="transfer")],
                enforce_floor=False, now=at)


def _history(db: Database) -> tuple[str, str, str]:
    """Money in and out of org A's wallet over five months, with transfers posted out of
    order (a February transfer after March ones, so seq order is not time order) and a
    month (2025-04) with no activity."""
    wallet, funding, revenue = _accounts(db)
    _post(db, [
        (funding, wallet, 1_000_000, _at("2025-01", 3)),
        (wallet, revenue, 1_234, _at("2025-01", 20)),
        (wallet, revenue, 99, _at("2025-03", 2)),
        (wallet, revenue, 5_000, _at("2025-02", 27)),  # late-posted February, higher seq
        (funding, wallet, 77, _at("2025-03", 31, 86_399)),
        (wallet, revenue, 1, _at("2025-05", 1)),
    ], "h")
    return wallet, funding, revenue


def _scratch(db: Database, account_id: str, before: datetime) -> tuple[int, int, int]:
    """Debits, credits and count of the account's transfers posted before ``before``."""
    T = TransferModel
    with db.transaction() as s:
        d = s.execute(sa.select(sa.func.coalesce(sa.func.sum(T.amount), 0), sa.func.count())
                      .where(T.debit_account_id == account_id, T.posted_at < before)).one()
        c = s.execute(sa.select(sa.func.coalesce(sa.func.sum(T.amount), 0), sa.func.count())
                      .where(T.credit_account_id == account_id, T.posted_at < before)).one()
    return int(d[0]), int(c[0]), int(d[1]) + int(c[1])


def _statements(db: Database, periods: list[str], now: datetime,
                keep: bool = True) -> list[billing.Statement]:
    """The statements of ``periods``, built read-only as the API serves them; with ``keep``,
    after closing what has ended by ``now`` as the billing-period-close controller does."""
    if keep:
        through = min(max(periods), billing.last_ended_period(now))
        with db.transaction() as s:
            for account in _accounts(db):
                billing.close_periods(s, account, through, now=now)
    with db.read_transaction() as s:
        return [billing.build_statement(s, org_id=ORG_A, period=p) for p in periods]


def _closings(db: Database, account_id: str) -> dict[str, PeriodClosingModel]:
    with db.transaction() as s:
        rows = s.scalars(sa.select(PeriodClosingModel).where(
            PeriodClosingModel.account_id == account_id)).all()
        s.expunge_all()
    return {r.period: r for r in rows}


def test_closings_equal_a_from_scratch_sum(db: Database) -> None:
    wallet, funding, revenue = _history(db)
    with db.transaction() as s:
        for account in (wallet, funding, revenue):
            billing.close_periods(s, account, "2025-04", now=LATE)
    for account in (wallet, funding, revenue):
        rows = _closings(db, account)
        assert sorted(rows) == MONTHS[:4]  # from the first month with a transfer, contiguous
        for period, row in rows.items():
            end = period_end(period)
            assert (row.debits, row.credits, row.transfers) == _scratch(db, account, end)
    # Closing again is a no-op; closing further continues from the last closing.
    with db.transaction() as s:
        assert billing.close_periods(s, wallet, "2025-04", now=LATE) == 0
        assert billing.close_periods(s, wallet, "2025-08", now=LATE) == 4
    rows = _closings(db, wallet)
    assert sorted(rows) == [*MONTHS, "2025-06", "2025-07", "2025-08"]
    assert rows["2025-08"].debits == _scratch(db, wallet, LATE)[0]
    with db.transaction() as s:
        assert billing.check_ledger(s).ok
    # A month that has not ended is never closed.
    with db.transaction() as s, pytest.raises(ValidationFailed):
        billing.close_periods(s, wallet, "2025-09", now=LATE)


def test_statements_with_closed_months_equal_statements_without(db: Database) -> None:
    _history(db)
    periods = [*MONTHS, "2025-06", "2025-09", "2025-10"]
    # "now" before any transfer: nothing can be closed, every statement sums the history.
    unclosed = _statements(db, periods, now=_at("2025-01", 1), keep=False)
    assert _closings(db, _accounts(db)[0]) == {}
    closed = _statements(db, periods, now=LATE)  # after closing 2025-01..2025-08
    assert sorted(_closings(db, _accounts(db)[0]))[-1] == "2025-08"
    again = _statements(db, periods, now=LATE)  # from the stored closings alone
    assert closed == unclosed == again
    by_period = {st.period: st for st in closed}
    assert by_period["2025-01"].opening_balance == 0
    assert by_period["2025-01"].closing_balance == 1_000_000 - 1_234
    assert by_period["2025-02"].closing_balance == 1_000_000 - 1_234 - 5_000
    assert by_period["2025-04"].lines == []
    for a, b in itertools.pairwise(closed):
        assert a.closing_balance == b.opening_balance
    with db.transaction() as s:
        assert by_period["2025-10"].closing_balance == billing.balance(
            s, billing.org_wallet(s, ORG_A, "USD").id).posted
        # An org without a wallet, and a month before the wallet's first transfer.
        assert billing.build_statement(s, org_id=ORG_B, period="2025-02").lines == []
        early = billing.build_statement(s, org_id=ORG_A, period="2024-06")
    assert (early.opening_balance, early.closing_balance, early.lines) == (0, 0, [])


def test_a_late_transfer_never_lands_in_a_closed_month(db: Database) -> None:
    wallet, funding, _ = _history(db)
    before = _statements(db, ["2025-03", "2025-06"], now=LATE)
    # A poster whose clock (or transaction) is behind the close posts into March.
    _post(db, [(funding, wallet, 500, _at("2025-03", 10))], "late")
    with db.transaction() as s:
        [t] = billing.wallet_transfers(s, ORG_A, "USD", after_seq=0, limit=100)[-1:]
        # The June statement closed the wallet through June: posted at July's start.
        assert t.amount == 500 and t.posted_at == datetime(2025, 7, 1, tzinfo=UTC)
        assert billing.check_ledger(s).ok
    march, june = _statements(db, ["2025-03", "2025-06"], now=LATE)
    assert (march, june) == tuple(before)  # closed months did not change
    july = _statements(db, ["2025-07"], now=LATE)[0]
    assert [(line.kind, line.amount) for line in july.lines] == [("transfer", 500)]
    assert july.closing_balance == before[1].closing_balance + 500


def test_ledger_check_detects_tampered_closings(db: Database) -> None:
    wallet, _, _ = _history(db)
    _statements(db, ["2025-06"], now=LATE)
    with db.transaction() as s:
        assert billing.check_ledger(s).ok
    C = PeriodClosingModel.__table__
    with db.engine.begin() as c:
        c.execute(C.update().where(C.c.account_id == wallet, C.c.period == "2025-02")
                  .values(debits=C.c.debits - 5_000))
    with db.transaction() as s:
        codes = {(d.code, d.subject) for d in billing.check_ledger(s).discrepancies}
    assert codes == {("closing-mismatch", wallet)}
    # The statement of the tampered month refuses to present it.
    with pytest.raises(ClosingMismatch):
        _statements(db, ["2025-02"], now=LATE)
    # A missing month, and a closing of a month that was never closed.
    with db.engine.begin() as c:
        c.execute(C.update().where(C.c.account_id == wallet, C.c.period == "2025-02")
                  .values(debits=C.c.debits + 5_000))
        c.execute(C.delete().where(C.c.account_id == wallet, C.c.period == "2025-04"))
        c.execute(C.insert().values(account_id=wallet, period="2025-12", debits=0, credits=0,
                                    transfers=0, last_seq=0, next_seq=1, closed_at=LATE))
        # The seq bound a statement reads from, moved past a transfer of the next month.
        c.execute(C.update().where(C.c.account_id == wallet, C.c.period == "2025-01")
                  .values(next_seq=10**6))
    with db.transaction() as s:
        codes = {d.code for d in billing.check_ledger(s).discrepancies}
    assert codes == {"closing-missing", "closing-orphan", "closing-mismatch"}


def test_the_controller_closes_every_account(db: Database) -> None:
    wallet, funding, revenue = _history(db)

    class Late:
        def now(self) -> datetime:
            return LATE

    written = billing.close_ended_periods(db, clock=Late())  # type: ignore[arg-type]
    assert written == 3 * 8  # each of the three accounts: 2025-01..2025-08
    assert billing.close_ended_periods(db, clock=Late()) == 0  # type: ignore[arg-type]
    with db.transaction() as s:
        assert billing.check_ledger(s).ok
        assert {a.id: a.closed_through for a in [billing.get_account(s, x) for x in (
            wallet, funding, revenue)]} == dict.fromkeys(
            (wallet, funding, revenue), datetime(2025, 9, 1, tzinfo=UTC))


def test_closing_while_posting_loses_nothing(db: Database) -> None:
    """Posters whose clock says March (the month being closed) race the close: each
    transfer is either in March's closing or posted in April, never lost or double
    counted (PostgreSQL: two sessions at once; SQLite serializes them)."""
    wallet, funding, _ = _accounts(db)
    end = datetime(2025, 4, 1, tzinfo=UTC)
    n = 30
    errors: list[BaseException] = []

    def poster() -> None:
        try:
            _post(db, [(funding, wallet, 10 + i, end - timedelta(microseconds=1))
                       for i in range(n)], "race")
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    thread = threading.Thread(target=poster)
    thread.start()
    while thread.is_alive() and not errors:
        with db.transaction() as s:
            if billing.close_periods(s, wallet, "2025-03", now=LATE - timedelta(days=120)):
                break
    thread.join(30)
    assert not errors
    march = _closings(db, wallet).get("2025-03")
    total = sum(10 + i for i in range(n))
    in_march = _scratch(db, wallet, end)
    after = _scratch(db, wallet, LATE)
    assert after[1] == total and after[2] == n
    if march is not None:
        assert (march.debits, march.credits, march.transfers) == in_march
    with db.transaction() as s:
        assert billing.check_ledger(s).ok
    st = _statements(db, ["2025-03", "2025-04"], now=LATE)
    assert st[0].closing_balance == in_march[1] and st[1].closing_balance == total
