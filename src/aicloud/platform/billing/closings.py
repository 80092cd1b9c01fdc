"""Closing balances: each account's balance at the end of each calendar month (UTC, by
posting time), so a statement starts from the previous month's closing instead of summing
the account's whole history.

A month is closed lazily, by the first statement of a later month, or by the
``billing-period-close`` controller. Closing locks the account row, the lock every posting
takes, and sets the account's ``closed_through``; ``post_transfers`` never posts before it
(a late transfer is posted at the start of the open month), so a closed month never changes.

Closings are derived from the transfers like the balance cache: ``ledger check`` recomputes
every one, and a statement of a closed month checks that the previous closing plus the
month's transfers equal its closing. Rows are contiguous: from the month of the account's
first transfer to the month before ``closed_through``; an account closed before its first
transfer has ``closed_through`` and no rows.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, String, and_, func, select, update
from sqlalchemy.orm import Session
from sqlalchemy.orm.util import identity_key

from aicloud.platform import audit
from aicloud.platform.billing.ledger import account_key
from aicloud.platform.billing.models import AccountModel, PeriodClosingModel, TransferModel
from aicloud.shared.clock import utcnow
from aicloud.shared.db import bulk
from aicloud.shared.errors import AppError, ValidationFailed

CLOSER = audit.Actor.system("billing-period-close")

# ASCII digits only: int() alone also took "2026-0_1", " 2026-01", "+2026-1" and non-ASCII
# digits, and the period ends up in the CSV's file name.
_PERIOD = re.compile(r"([1-9][0-9]{3})-(0[1-9]|1[0-2])")


class ClosingMismatch(AppError):
    """A stored closing disagrees with the transfers (edited outside the application)."""

    status, code, title = 500, "ledger-inconsistent", "The ledger's derived data is inconsistent"


def parse_period(period: str) -> datetime:
    """The first instant of a ``YYYY-MM`` period."""
    m = _PERIOD.fullmatch(period)
    if m is None:
        raise ValidationFailed("period must be YYYY-MM", field="period")
    return datetime(int(m[1]), int(m[2]), 1, tzinfo=UTC)


def period_of(at: datetime) -> str:
    at = at.astimezone(UTC)
    return f"{at.year:04d}-{at.month:02d}"


def period_end(period: str) -> datetime:
    start = parse_period(period)
    return datetime(start.year + (start.month == 12), start.month % 12 + 1, 1, tzinfo=UTC)


def next_period(period: str) -> str:
    return period_of(period_end(period))


def previous_period(period: str) -> str:
    return period_of(parse_period(period) - timedelta(days=1))


def last_ended_period(now: datetime) -> str:
    """The latest month that has ended at ``now``."""
    return previous_period(period_of(now))


def period_column(session: Session) -> ColumnElement[str]:
    """A transfer's posting month as ``YYYY-MM``, computed by the database."""
    T = TransferModel
    if session.get_bind().dialect.name == "postgresql":
        return func.to_char(func.timezone("UTC", T.posted_at), "YYYY-MM", type_=String)
    # SQLite stores UTCDateTime as "YYYY-MM-DD HH:MM:SS.ffffff" (naive UTC).
    return func.substr(T.posted_at, 1, 7, type_=String)


@dataclass
class PeriodActivity:
    """One account's transfers posted in one month: sums, count and seq range."""

    debits: int = 0
    credits: int = 0
    transfers: int = 0
    min_seq: int | None = None
    max_seq: int = 0

    def add(self, debits: int, credits: int, n: int, lo: int, hi: int) -> None:
        self.debits += debits
        self.credits += credits
        self.transfers += n
        self.min_seq = lo if self.min_seq is None else min(self.min_seq, lo)
        self.max_seq = max(self.max_seq, hi)


def activity_by_period(session: Session, account_id: str,
                       from_seq: int = 0) -> dict[str, PeriodActivity]:
    """The account's transfers with seq >= ``from_seq``, summed per posting month: one
    grouped scan per side, through the (account key, seq) indexes."""
    T, key = TransferModel, account_key(account_id)
    month = period_column(session)
    out: dict[str, PeriodActivity] = {}
    for key_col, id_col, debit in ((T.debit_key, T.debit_account_id, True),
                                   (T.credit_key, T.credit_account_id, False)):
        rows = session.execute(
            select(month, func.sum(T.amount), func.count(), func.min(T.seq), func.max(T.seq))
            .where(key_col == key, id_col == account_id, T.seq >= from_seq)
            .group_by(month))
        for period, total, n, lo, hi in rows:
            total = int(total)
            out.setdefault(period, PeriodActivity()).add(
                total if debit else 0, 0 if debit else total, int(n), int(lo), int(hi))
    return out


def latest_closing(session: Session, account_id: str,
                   before: str | None = None) -> PeriodClosingModel | None:
    """The account's latest closing (before the period ``before``, when given)."""
    C = PeriodClosingModel
    stmt = select(C).where(C.account_id == account_id)
    if before is not None:
        stmt = stmt.where(C.period < before)
    return session.scalar(stmt.order_by(C.period.desc()).limit(1))


def get_closing(session: Session, account_id: str, period: str) -> PeriodClosingModel | None:
    return session.get(PeriodClosingModel, (account_id, period))


def close_periods(session: Session, account_id: str, through: str, *,
                  now: datetime | None = None, actor: audit.Actor = CLOSER) -> int:
    """Close the account's months up to and including ``through`` (which must have ended);
    the number of closings written. Idempotent: months already closed are left alone."""
    now = now or utcnow()
    end = period_end(through)
    if end > now:
        raise ValidationFailed(f"period {through} has not ended yet", field="period")
    A = AccountModel
    closed = session.execute(select(A.closed_through).where(A.id == account_id)).one_or_none()
    if closed is not None and closed[0] is not None and closed[0] >= end:
        return 0  # closed already: no lock (a statement must not hold up posting)
    # The lock every posting to this account takes: a transfer is either seen here or posted
    # after this commits, and then no earlier than ``end``.
    row = session.execute(select(A.id, A.scope_path, A.closed_through).where(A.id == account_id)
                          .with_for_update()).one_or_none()
    if row is None:
        raise ValidationFailed(f"unknown account {account_id}", field="account_id")
    if row.closed_through is not None and row.closed_through >= end:
        return 0
    previous = latest_closing(session, account_id)
    debits = credits = transfers = last_seq = next_seq = 0
    first: str | None = None
    if previous is not None:
        debits, credits, transfers = previous.debits, previous.credits, previous.transfers
        last_seq, next_seq = previous.last_seq, previous.next_seq
        first = next_period(previous.period)
    # From next_seq on: every transfer posted after the previous closing's end, and those
    # before it that a later month's transfer preceded in seq (already in that closing).
    activity = activity_by_period(session, account_id, next_seq)
    if first is not None:
        activity = {p: a for p, a in activity.items() if p >= first}
    if first is None:
        started = [p for p in activity if p <= through]
        if not started:  # nothing posted before the end: closed, with no rows to write
            _set_closed_through(session, account_id, end)
            return 0
        first = min(started)
    # Every transfer of the account is either below next_seq (posted before the previous
    # closing's end) or in ``activity``.
    top = max((a.max_seq for a in activity.values()), default=next_seq - 1) + 1
    starts = [(p, a.min_seq) for p, a in activity.items() if a.min_seq is not None]
    rows: list[dict[str, Any]] = []
    period = first
    while period <= through:
        a = activity.get(period)
        if a is not None:
            debits, credits, transfers = (debits + a.debits, credits + a.credits,
                                          transfers + a.transfers)
            last_seq = max(last_seq, a.max_seq)
        # The lowest seq posted in any later month: where the next months' history starts.
        next_seq = min((lo for p, lo in starts if p > period), default=top)
        rows.append({"account_id": account_id, "period": period, "debits": debits,
                     "credits": credits, "transfers": transfers, "last_seq": last_seq,
                     "next_seq": next_seq, "closed_at": now})
        period = next_period(period)
    bulk.insert_rows(session.connection(), PeriodClosingModel.__table__, rows)
    _set_closed_through(session, account_id, end)
    audit.record(session, actor=actor, action="billing.period.close", target_type="account",
                 target_id=account_id, scope_path=row.scope_path,
                 details={"from": rows[0]["period"], "through": through,
                          "debits": debits, "credits": credits, "transfers": transfers})
    return len(rows)


def _set_closed_through(session: Session, account_id: str, end: datetime) -> None:
    session.execute(update(AccountModel).where(AccountModel.id == account_id)
                    .values(closed_through=end).execution_options(synchronize_session=False))
    # The UPDATE bypassed the ORM: an account object this session holds reloads the value.
    acct = session.identity_map.get(identity_key(AccountModel, account_id))
    if acct is not None:
        session.expire(acct, ["closed_through"])


def accounts_to_close(session: Session, through: str) -> list[str]:
    """Accounts not closed through ``through``."""
    A = AccountModel
    end = period_end(through)
    return list(session.scalars(select(A.id).where(
        and_(A.closed_through.is_(None) | (A.closed_through < end))).order_by(A.id)))
