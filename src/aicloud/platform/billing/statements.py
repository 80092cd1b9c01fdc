"""Monthly statements of an organization's wallet, built from the ledger alone.

The period is by posting time: every transfer that touched the wallet in the month is in
exactly one line, so opening + lines = closing, and closing is the ledger balance at the end
of the month. Usage lines are grouped by project, meter and price; the usage quantity shown
is that of the charged records (records whose cumulative-rounded charge was 0 have no
transfer and no line).

The opening balance is the previous month's closing (closings.py, written by the
billing-period-close controller) plus whatever was posted after the last closing, and the
month's transfers are read through the seq range the closings give: once the controller has
closed the ended months, a statement costs what its month holds, not what the wallet's whole
history holds.
"""

from __future__ import annotations

from collections import defaultdict

from sqlalchemy import ColumnElement, and_, case, func, or_, select
from sqlalchemy.orm import Session

from aicloud.platform.billing.closings import (
    ClosingMismatch,
    get_closing,
    latest_closing,
    parse_period,
    period_end,
    previous_period,
)
from aicloud.platform.billing.ledger import account_key, find_wallet, normal_balance
from aicloud.platform.billing.models import (
    PriceModel,
    RatingStreamModel,
    TransferModel,
    UsageRecordModel,
)
from aicloud.platform.billing.money import check_currency
from aicloud.platform.billing.schemas import Statement, StatementLine


def _signed(wallet_id: str):  # type: ignore[no-untyped-def]
    T = TransferModel
    return case((T.credit_account_id == wallet_id, T.amount), else_=-T.amount)


def _touches_range(account_id: str, lo: int, hi: int | None) -> ColumnElement[bool]:
    """ledger.touches with seq in [lo, hi], the range inside each branch so that each side
    is one range of its (account key, seq) index."""
    T, key = TransferModel, account_key(account_id)
    bounds = [T.seq >= lo] + ([T.seq <= hi] if hi is not None else [])
    return or_(and_(T.debit_key == key, T.debit_account_id == account_id, *bounds),
               and_(T.credit_key == key, T.credit_account_id == account_id, *bounds))


def build_statement(session: Session, *, org_id: str, period: str,
                    currency: str = "USD") -> Statement:
    check_currency(currency)
    start = parse_period(period)
    end = period_end(period)
    # A read creates no wallet: an org without one has an empty statement.
    found = find_wallet(session, org_id, currency)
    empty = Statement(org_id=org_id, period=period, currency=currency, opening_balance=0,
                      charges=0, credits=0, closing_balance=0, lines=[])
    if found is None:
        return empty
    wallet = found.id
    # A statement only reads (it is served in a read-only transaction): the months the
    # billing-period-close controller has closed are one row each, and what it has not
    # closed yet is summed below from the last closing on.
    T, U, S, P = TransferModel, UsageRecordModel, RatingStreamModel, PriceModel
    before = latest_closing(session, wallet, before=period)
    closing = get_closing(session, wallet, period)
    if (before is None and closing is None and found.closed_through is not None
            and found.closed_through >= end):
        return empty  # closed, and closings start at the wallet's first transfer: none yet
    lo = before.next_seq if before is not None else 0
    opening = (normal_balance(found.type, before.debits, before.credits)
               if before is not None else 0)
    if before is None or before.period != previous_period(period):
        # The months between the last closing and this one are not closed (this month is
        # the current one, or later): add what was posted in them.
        opening += int(session.scalar(select(func.coalesce(func.sum(_signed(wallet)), 0))
                                      .where(_touches_range(wallet, lo, None),
                                             T.posted_at < start)) or 0)
    in_period = and_(_touches_range(wallet, lo, closing.last_seq if closing else None),
                     T.posted_at >= start, T.posted_at < end)

    lines: list[StatementLine] = []
    usage_rows = session.execute(
        select(U.project_id, U.meter, U.dimension_value, U.price_id, P.unit_price,
               P.per_quantity, S.discount_bp, func.sum(U.quantity), func.sum(_signed(wallet)),
               func.count())
        .select_from(T).join(U, U.id == T.usage_id)
        .join(S, S.id == U.stream_id).join(P, P.id == U.price_id)
        .where(in_period, T.reason == "usage")
        .group_by(U.project_id, U.meter, U.dimension_value, U.price_id, P.unit_price,
                  P.per_quantity, S.discount_bp)
        .order_by(U.project_id, U.meter, U.dimension_value, U.price_id, S.discount_bp))
    for project, meter, dim, price_id, unit, per, disc, qty, amount, n in usage_rows:
        lines.append(StatementLine(
            kind="usage", project_id=project, meter=meter, dimension_value=dim,
            price_id=price_id, unit_price=unit, per_quantity=per, discount_bp=disc,
            quantity=int(qty), amount=int(amount), transfers=n))
    other: dict[tuple[str, bool], list[int]] = defaultdict(lambda: [0, 0])
    for reason, amount in session.execute(
            select(T.reason, _signed(wallet)).where(in_period, T.reason != "usage")):
        acc = other[(reason, amount > 0)]
        acc[0] += int(amount)
        acc[1] += 1
    for (reason, _), (amount, n) in sorted(other.items()):
        lines.append(StatementLine(kind=reason, amount=amount, transfers=n))  # type: ignore[arg-type]
    charges = -sum(line.amount for line in lines if line.amount < 0)
    credits = sum(line.amount for line in lines if line.amount > 0)
    if closing is not None and (want := normal_balance(
            found.type, closing.debits, closing.credits)) != opening + credits - charges:
        # Closings are derived data: never trusted when the transfers say otherwise.
        raise ClosingMismatch(
            f"the closing balance of {period} for wallet {wallet} is {want}, but the "
            f"previous closing and the month's transfers give {opening + credits - charges}; "
            "run `aicloud ledger check`", account_id=wallet, period=period)
    return Statement(org_id=org_id, period=period, currency=currency, opening_balance=opening,
                     charges=charges, credits=credits,
                     closing_balance=opening + credits - charges, lines=lines)
