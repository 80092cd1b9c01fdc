from __future__ import annotations

import csv
import io
from datetime import datetime, timedelta

import pytest

from aicloud.platform import billing
from aicloud.shared.clock import utcnow
from aicloud.shared.db import Database
from aicloud.shared.errors import ValidationFailed
from tests.platform.billing.factories import (
    ADMIN,
    DEP_A,
    ORG_A,
    ORG_B,
    PRJ_A,
    PRJ_B,
    T0,
    rate_all,
    setup_catalog,
    usage,
)


def _period(at: datetime) -> str:
    return f"{at.year:04d}-{at.month:02d}"


def _activity(db: Database) -> None:
    setup_catalog(db)
    with db.transaction() as s:
        billing.top_up(s, actor=ADMIN, org_id=ORG_A, amount=50_000_000, currency="USD",
                       idempotency_key="t1")
        billing.adjust(s, actor=ADMIN, org_id=ORG_A, amount=-123, currency="USD",
                       idempotency_key="a1", note="support fee")
        billing.ingest_usage(s, [
            usage("g1", project=PRJ_A, quantity=100, principal="user_1"),
            usage("g2", project=PRJ_A, quantity=50, principal="user_2",
                  start=T0 + timedelta(days=1, hours=3)),
            usage("h1", project=PRJ_B, dim="H100", quantity=10, principal="user_1"),
            usage("v1", project=PRJ_B, meter="vcpu_seconds", quantity=7, principal="user_2"),
            usage("other-org", org=ORG_B, quantity=1000),
        ], actor=ADMIN)
    rate_all(db)


def test_statement_totals_equal_the_ledger(db: Database) -> None:
    _activity(db)
    now = utcnow()
    with db.transaction() as s:
        st = billing.build_statement(s, org_id=ORG_A, period=_period(now))
        wallet = billing.org_wallet(s, ORG_A, "USD").id
        ledger_balance = billing.balance(s, wallet).posted
        previous = billing.build_statement(s, org_id=ORG_A,
                                           period=_period(now - timedelta(days=40)))
    assert st.opening_balance == 0 and previous.lines == []
    assert st.closing_balance == ledger_balance
    assert st.opening_balance + sum(line.amount for line in st.lines) == st.closing_balance
    usage_lines = {(line.project_id, line.meter, line.dimension_value): line
                   for line in st.lines if line.kind == "usage"}
    assert usage_lines[(PRJ_A, "gpu_seconds", "A100")].quantity == 150
    assert usage_lines[(PRJ_A, "gpu_seconds", "A100")].amount == -150_000
    assert usage_lines[(PRJ_B, "gpu_seconds", "H100")].amount == -20_000
    assert usage_lines[(PRJ_B, "vcpu_seconds", "")].amount == -70  # 0.036/h * 7 s
    kinds = {line.kind: line.amount for line in st.lines if line.kind != "usage"}
    assert kinds == {"top_up": 50_000_000, "adjustment": -123}
    assert st.charges == 150_000 + 20_000 + 70 + 123

    rows = list(csv.reader(io.StringIO(billing.statement_csv(st))))
    assert rows[0][:3] == ["org_id", "period", "currency"]
    assert rows[1][3] == "opening_balance" and rows[-1][3] == "closing_balance"
    assert int(rows[-1][-2]) == ledger_balance
    assert sum(int(r[-2]) for r in rows[2:-1]) == st.closing_balance - st.opening_balance
    assert billing.Statement.model_validate_json(st.model_dump_json()) == st
    with db.transaction() as s, pytest.raises(ValidationFailed):
        billing.build_statement(s, org_id=ORG_A, period="2026-13")


def test_cost_report_groups_any_scope_and_range(db: Database) -> None:
    _activity(db)
    start, end = T0, T0 + timedelta(days=5)
    with db.transaction() as s:
        by_project = billing.cost_report(s, scope_path=f"/{ORG_A}", start=start, end=end,
                                         group_by=["project"])
        by_user_day = billing.cost_report(s, scope_path=f"/{ORG_A}/{DEP_A}/{PRJ_A}", start=start,
                                          end=end, group_by=["user", "day"])
        by_dep_meter = billing.cost_report(s, scope_path=f"/{ORG_A}", start=start, end=end,
                                           group_by=["department", "meter"])
        first_day = billing.cost_report(s, scope_path=f"/{ORG_A}", start=start,
                                        end=T0 + timedelta(days=1), group_by=["meter"])
    assert {r.key["project"]: r.amount for r in by_project.rows} == {
        PRJ_A: 150_000, PRJ_B: 20_070}
    assert by_project.total == {"USD": 170_070}
    assert {(r.key["user"], r.key["day"]): r.amount for r in by_user_day.rows} == {
        ("user_1", "2026-01-01"): 100_000, ("user_2", "2026-01-02"): 50_000}
    assert {(r.key["department"], r.key["meter"]): r.quantity for r in by_dep_meter.rows} == {
        (DEP_A, "gpu_seconds"): 160, (DEP_A, "vcpu_seconds"): 7}
    assert first_day.total == {"USD": 120_070}
    table = list(csv.DictReader(io.StringIO(billing.cost_report_csv(by_project))))
    assert [(r["project"], int(r["amount"])) for r in table] == [
        (PRJ_A, 150_000), (PRJ_B, 20_070)]
    for bad in ({"group_by": ["planet"]}, {"group_by": []},
                {"end": start - timedelta(days=1)},
                {"start": datetime(2026, 1, 1), "end": datetime(2026, 1, 2)}):
        kw = {"scope_path": f"/{ORG_A}", "start": start, "end": end, "group_by": ["day"], **bad}
        with db.transaction() as s, pytest.raises(ValidationFailed):
            billing.cost_report(s, **kw)  # type: ignore[arg-type]
