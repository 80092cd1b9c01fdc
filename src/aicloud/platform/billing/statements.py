"""Monthly statements of an organization's wallet, built from the ledger alone.

The period is by posting time: every transfer that touched the wallet in the month is in
exactly one line, so opening + lines = closing, and closing is the ledger balance at the end
of the month. Usage lines are grouped by project, meter and price; the usage quantity shown
is that of the charged records (records whose cumulative-rounded charge was 0 have no
transfer and no line).
"""

from __future__ import annotations

import re
from collections import defaultdict
from datetime import UTC, datetime

from sqlalchemy import and_, case, func, select
from sqlalchemy.orm import Session

from aicloud.platform.billing.budgets import month_bounds
from aicloud.platform.billing.ledger import find_wallet, touches
from aicloud.platform.billing.models import (
    PriceModel,
    RatingStreamModel,
    TransferModel,
    UsageRecordModel,
)
from aicloud.platform.billing.money import check_currency
from aicloud.platform.billing.schemas import Statement, StatementLine
from aicloud.shared.errors import ValidationFailed

# ASCII digits only: int() alone also took "2026-0_1", " 2026-01", "+2026-1" and non-ASCII
# digits, and the period ends up in the CSV's file name.
_PERIOD = re.compile(r"([1-9][0-9]{3})-(0[1-9]|1[0-2])")


def _parse_period(period: str) -> datetime:
    m = _PERIOD.fullmatch(period)
    if m is None:
        raise ValidationFailed("period must be YYYY-MM", field="period")
    return datetime(int(m[1]), int(m[2]), 1, tzinfo=UTC)


def _signed(wallet_id: str):  # type: ignore[no-untyped-def]
    T = TransferModel
    return case((T.credit_account_id == wallet_id, T.amount), else_=-T.amount)


def build_statement(session: Session, *, org_id: str, period: str,
                    currency: str = "USD") -> Statement:
    check_currency(currency)
    _, start, end = month_bounds(_parse_period(period))
    # A read creates nothing: an org without a wallet yet has an empty statement.
    found = find_wallet(session, org_id, currency)
    wallet = found.id if found is not None else ""
    T, U, S, P = TransferModel, UsageRecordModel, RatingStreamModel, PriceModel
    in_wallet = touches(wallet)
    opening = int(session.scalar(select(func.coalesce(func.sum(_signed(wallet)), 0)).where(
        in_wallet, T.posted_at < start)) or 0)
    in_period = and_(in_wallet, T.posted_at >= start, T.posted_at < end)

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
    return Statement(org_id=org_id, period=period, currency=currency, opening_balance=opening,
                     charges=charges, credits=credits,
                     closing_balance=opening + credits - charges, lines=lines)
