"""Budgets, budget alerts and cost reports at any scope (organization, department, project)."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Annotated, Literal

from fastapi import APIRouter, Query, Response

from aicloud.api.authz import Authorize, Caller, path_param, register_scope_resolver
from aicloud.api.deps import Context, RequestRoute
from aicloud.platform import billing, iam
from aicloud.shared.clock import utcnow
from aicloud.shared.errors import ValidationFailed

router = APIRouter(tags=["billing: budgets and reports"], route_class=RequestRoute)

SCOPE = path_param("scope_id")
BudgetReader = Annotated[Caller, Authorize("billing.budgets.read", scope=SCOPE)]
BudgetWriter = Annotated[Caller, Authorize("billing.budgets.write", scope=SCOPE)]
ReportReader = Annotated[Caller, Authorize("billing.reports.read", scope=SCOPE)]


def _budget_scope(caller: Caller, budget_id: str) -> iam.Target:
    # A budget lives at the last scope of its path (org, department or project).
    return billing.get_budget(caller.session, budget_id).scope_path.rsplit("/", 1)[-1]


register_scope_resolver("bdgt", _budget_scope)


def scope_path(caller: Caller, scope_id: str) -> str:
    """The billing form of an already authorized scope id: /org[/dep[/prj]]."""
    if scope_id == iam.PLATFORM:
        raise ValidationFailed("name an organization, department or project",
                               field="scope_id")
    return caller.snapshot().scope_path(scope_id)


@router.get("/scopes/{scope_id}/budgets", response_model=list[billing.Budget])
def list_budgets(scope_id: str, caller: BudgetReader) -> list[billing.Budget]:
    """Budgets at and below the scope."""
    return billing.list_budgets(caller.session, scope_path(caller, scope_id))


@router.post("/scopes/{scope_id}/budgets", status_code=201, response_model=billing.Budget)
def create_budget(scope_id: str, body: billing.BudgetBody, caller: BudgetWriter,
                  ctx: Context) -> billing.Budget:
    """A monthly budget for the scope: thresholds record alerts (and a signed webhook when
    a URL is set: public addresses only, https in strict profiles); a blocking action
    always applies at 100%."""
    spec = billing.BudgetCreate(scope_path=scope_path(caller, scope_id), **body.model_dump())
    return billing.create_budget(caller.session, actor=caller.actor, spec=spec,
                                 webhooks=ctx.webhook_policy)


@router.get("/budgets/{budget_id}", response_model=billing.Budget)
def get_budget(budget_id: str,
               caller: Annotated[Caller, Authorize("billing.budgets.read",
                                                   scope=path_param("budget_id"))],
               ) -> billing.Budget:
    return billing.get_budget(caller.session, budget_id)


@router.delete("/budgets/{budget_id}", status_code=204)
def delete_budget(budget_id: str,
                  caller: Annotated[Caller, Authorize("billing.budgets.write",
                                                      scope=path_param("budget_id"))],
                  ) -> Response:
    billing.delete_budget(caller.session, actor=caller.actor, budget_id=budget_id)
    return Response(status_code=204)


@router.get("/scopes/{scope_id}/budget-alerts", response_model=list[billing.BudgetAlert])
def list_budget_alerts(
    scope_id: str, caller: BudgetReader,
    period: Annotated[str | None, Query(pattern=r"^\d{4}-\d{2}$",
                                        description="YYYY-MM; all months if omitted")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[billing.BudgetAlert]:
    """Alerts recorded for budgets at and below the scope, newest first."""
    return billing.list_alerts(caller.session, scope_path(caller, scope_id), period=period,
                               limit=limit)


@router.get("/scopes/{scope_id}/cost-report", response_model=billing.CostReport,
            responses={200: {"content": {"text/csv": {}}}})
def cost_report(
    scope_id: str, caller: ReportReader,
    start: Annotated[datetime | None, Query(alias="from", description=(
        "inclusive, with a time zone; the start of the current month if omitted"))] = None,
    end: Annotated[datetime | None, Query(alias="to", description=(
        "exclusive, with a time zone; the start of the next month if omitted"))] = None,
    group_by: Annotated[str, Query(description=(
        "comma-separated: organization, department, project, user, meter, day"))] = "project",
    format: Annotated[Literal["json", "csv"], Query()] = "json",
) -> billing.CostReport | Response:
    """Rated spend at and below the scope for usage windows in [from, to), grouped."""
    _, month_start, month_end = billing.month_bounds(utcnow())
    start = start or month_start
    end = end or (month_end if start == month_start else start + timedelta(days=31))
    report = billing.cost_report(caller.session, scope_path=scope_path(caller, scope_id),
                                 start=start, end=end,
                                 group_by=[g.strip() for g in group_by.split(",") if g.strip()])
    if format == "csv":
        return Response(billing.cost_report_csv(report), media_type="text/csv",
                        headers={"Content-Disposition":
                                 'attachment; filename="cost-report.csv"'})
    return report
