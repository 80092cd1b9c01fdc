"""CSV rendering of statements and cost reports (JSON is the pydantic models themselves)."""

from __future__ import annotations

import csv
import io

from aicloud.platform.billing.schemas import CostReport, Statement

STATEMENT_COLUMNS = ["kind", "project_id", "meter", "dimension_value", "price_id", "unit_price",
                     "per_quantity", "discount_bp", "quantity", "amount", "transfers"]


def statement_csv(statement: Statement) -> str:
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\n")
    w.writerow(["org_id", "period", "currency", *STATEMENT_COLUMNS])
    head = [statement.org_id, statement.period, statement.currency]
    w.writerow([*head, "opening_balance", *[""] * 8, statement.opening_balance, ""])
    for line in statement.lines:
        data = line.model_dump()
        w.writerow([*head, *("" if data[c] is None else data[c] for c in STATEMENT_COLUMNS)])
    w.writerow([*head, "closing_balance", *[""] * 8, statement.closing_balance, ""])
    return out.getvalue()


def cost_report_csv(report: CostReport) -> str:
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\n")
    w.writerow([*report.group_by, "currency", "amount", "quantity", "records"])
    for row in report.rows:
        w.writerow([*(row.key[g] for g in report.group_by), row.currency, row.amount,
                    row.quantity, row.records])
    return out.getvalue()
