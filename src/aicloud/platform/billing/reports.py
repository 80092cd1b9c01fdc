"""Cost reports at any scope: rated spend grouped by department, project, user, meter, day."""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime

from sqlalchemy import Date, cast, func, select
from sqlalchemy.orm import Session

from aicloud.platform.billing.models import RATED, UsageRecordModel
from aicloud.platform.billing.schemas import CostReport, CostRow
from aicloud.platform.billing.scopes import at_or_below, resolve_scope
from aicloud.shared.errors import ValidationFailed

GROUPS = ("organization", "department", "project", "user", "meter", "day")
MAX_RANGE_DAYS = 400


def _day(session: Session):  # type: ignore[no-untyped-def]
    U = UsageRecordModel
    if session.get_bind().dialect.name == "sqlite":
        return func.date(U.window_start)  # stored as naive UTC text
    return cast(func.timezone("UTC", U.window_start), Date)


def cost_report(session: Session, *, scope_path: str, start: datetime, end: datetime,
                group_by: list[str]) -> CostReport:
    """Spend of usage whose window starts in [start, end), at or below ``scope_path``."""
    resolve_scope(session, scope_path)
    unknown = [g for g in group_by if g not in GROUPS]
    if unknown or not group_by or len(set(group_by)) != len(group_by):
        raise ValidationFailed(f"group_by takes distinct values among {', '.join(GROUPS)}",
                               field="group_by")
    if start.tzinfo is None or end.tzinfo is None:
        raise ValidationFailed("start and end must carry a time zone")
    if end <= start or (end - start).days > MAX_RANGE_DAYS:
        raise ValidationFailed(f"end must be after start, at most {MAX_RANGE_DAYS} days")
    U = UsageRecordModel
    day = _day(session)
    rows = session.execute(
        select(U.scope_path, U.principal_id, U.meter, day, U.currency, func.sum(U.charge),
               func.sum(U.quantity), func.count())
        .where(at_or_below(U.scope_path, scope_path), U.state == RATED,
               U.window_start >= start, U.window_start < end)
        .group_by(U.scope_path, U.principal_id, U.meter, day, U.currency))
    acc: dict[tuple[tuple[str, ...], str], list[int]] = defaultdict(lambda: [0, 0, 0])
    totals: dict[str, int] = defaultdict(int)
    for path, principal, meter, d, currency, amount, qty, n in rows:
        parts = path.strip("/").split("/")
        values = {
            "organization": parts[0],
            "department": parts[1] if len(parts) == 3 else "-",
            "project": parts[-1],
            "user": principal or "-",
            "meter": meter,
            "day": str(d),
        }
        a = acc[(tuple(values[g] for g in group_by), currency)]
        a[0] += int(amount)
        a[1] += int(qty)
        a[2] += n
        totals[currency] += int(amount)
    out = [CostRow(key=dict(zip(group_by, key, strict=True)), currency=currency,
                   amount=a[0], quantity=a[1], records=a[2])
           for (key, currency), a in sorted(acc.items())]
    return CostReport(scope_path=scope_path, start=start, end=end, group_by=group_by,
                      total=dict(totals), rows=out)
