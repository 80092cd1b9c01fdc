"""Monthly budgets per organization, department or project, with threshold alerts.

Budgets are evaluated against the rated spend of their scope in the current calendar month
when spend is posted: the rater evaluates the budgets above the scopes it charged, in the
transaction that posts the charges (a controller re-evaluates all of them as a backstop).
Each threshold crossed records one alert per month (a unique key makes this safe with several
evaluators), queues a signed webhook when the budget has a URL, and at 100% an action other
than "notify" is announced on the outbox topic ``billing.budget.exceeded`` for products to act
on (block new launches, or stop running workloads). A blocking action always applies at 100%,
whatever thresholds the budget lists, and only while the budget exists.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from aicloud.platform import audit
from aicloud.platform.billing.models import (
    RATED,
    BudgetAlertModel,
    BudgetModel,
    UsageRecordModel,
    WebhookDeliveryModel,
)
from aicloud.platform.billing.money import check_amount, check_currency
from aicloud.platform.billing.schemas import Budget, BudgetAlert, BudgetCreate
from aicloud.platform.billing.scopes import at_or_below, resolve_scope, split_scope
from aicloud.platform.billing.webhook_targets import WebhookPolicy, check_target
from aicloud.shared import events
from aicloud.shared.clock import utcnow
from aicloud.shared.errors import NotFound, ValidationFailed
from aicloud.shared.ids import new_id

EXCEEDED_TOPIC = "billing.budget.exceeded"
EVALUATOR = audit.Actor.system("billing-budgets")
BLOCKING_ACTIONS = ("block_launches", "stop_workloads")


def month_bounds(at: datetime) -> tuple[str, datetime, datetime]:
    start = datetime(at.year, at.month, 1, tzinfo=UTC)
    end = datetime(at.year + (at.month == 12), at.month % 12 + 1, 1, tzinfo=UTC)
    return f"{at.year:04d}-{at.month:02d}", start, end


def effective_thresholds(action: str, thresholds: Iterable[int]) -> list[int]:
    """The thresholds a budget alerts at: a blocking action always applies at 100%, so a
    ``stop_workloads`` budget listing only 50 and 80 still stops at 100 (it used to be
    accepted and never stop anything)."""
    found = set(thresholds)
    if action in BLOCKING_ACTIONS:
        found.add(100)
    return sorted(found)


def ancestor_paths(scope_path: str) -> list[str]:
    """``/o/d/p`` -> ``["/o", "/o/d", "/o/d/p"]``."""
    parts = split_scope(scope_path)
    return ["/" + "/".join(parts[:i]) for i in range(1, len(parts) + 1)]


def budget_model_to_budget(m: BudgetModel) -> Budget:
    return Budget(id=m.id, scope_path=m.scope_path, amount=m.amount, currency=m.currency,
                  thresholds=effective_thresholds(m.action, json.loads(m.thresholds)),
                  action=m.action,  # type: ignore[arg-type]
                  webhook_url=m.webhook_url, has_webhook_secret=bool(m.webhook_secret),
                  created_at=m.created_at)


def alert_model_to_alert(m: BudgetAlertModel) -> BudgetAlert:
    return BudgetAlert(id=m.id, budget_id=m.budget_id, scope_path=m.scope_path,
                       period=m.period, threshold=m.threshold, spend=m.spend, amount=m.amount,
                       action=m.action, created_at=m.created_at)  # type: ignore[arg-type]


def create_budget(session: Session, *, actor: audit.Actor, spec: BudgetCreate,
                  webhooks: WebhookPolicy | None = None,
                  now: datetime | None = None) -> Budget:
    """A monthly budget. ``webhooks``: where the deployment lets webhooks go (public
    addresses only by default); the URL is checked now and again at each delivery."""
    resolve_scope(session, spec.scope_path)
    check_amount(spec.amount)
    check_currency(spec.currency)
    if any(not 0 < t <= 1000 for t in spec.thresholds):
        raise ValidationFailed("thresholds are percents between 1 and 1000", field="thresholds")
    if spec.webhook_url is not None:
        check_target(spec.webhook_url, webhooks or WebhookPolicy(), unresolved_ok=True)
    now = now or utcnow()
    m = BudgetModel(id=new_id("bdgt"), scope_path=spec.scope_path, currency=spec.currency,
                    amount=spec.amount,
                    thresholds=json.dumps(effective_thresholds(spec.action, spec.thresholds)),
                    action=spec.action, webhook_url=spec.webhook_url,
                    webhook_secret=spec.webhook_secret, created_at=now, updated_at=now)
    session.add(m)
    session.flush()
    audit.record(session, actor=actor, action="billing.budget.create", target_type="budget",
                 target_id=m.id, scope_path=spec.scope_path,
                 changes=audit.diff(None, spec.model_dump(), secret_fields=["webhook_secret"]))
    # Spend already posted this month counts at once: a budget created below what its
    # scope has spent blocks or stops now, not at the next charge.
    _evaluate(session, [m], now)
    return budget_model_to_budget(m)


def get_budget(session: Session, budget_id: str) -> Budget:
    m = session.get(BudgetModel, budget_id)
    if m is None:
        raise NotFound(f"budget {budget_id} not found")
    return budget_model_to_budget(m)


def delete_budget(session: Session, *, actor: audit.Actor, budget_id: str) -> None:
    m = session.get(BudgetModel, budget_id)
    if m is None:
        raise NotFound(f"budget {budget_id} not found")
    old = budget_model_to_budget(m).model_dump(mode="json")
    session.delete(m)
    audit.record(session, actor=actor, action="billing.budget.delete", target_type="budget",
                 target_id=budget_id, scope_path=m.scope_path, changes=audit.diff(old, None))


def list_budgets(session: Session, scope_path: str) -> list[Budget]:
    """Budgets at or below a scope."""
    resolve_scope(session, scope_path)
    rows = session.scalars(select(BudgetModel).where(
        at_or_below(BudgetModel.scope_path, scope_path)).order_by(BudgetModel.id))
    return [budget_model_to_budget(m) for m in rows]


def list_alerts(session: Session, scope_path: str, *, period: str | None = None,
                limit: int = 100) -> list[BudgetAlert]:
    resolve_scope(session, scope_path)
    stmt = select(BudgetAlertModel).where(
        at_or_below(BudgetAlertModel.scope_path, scope_path))
    if period:
        stmt = stmt.where(BudgetAlertModel.period == period)
    rows = session.scalars(stmt.order_by(BudgetAlertModel.created_at.desc(),
                                         BudgetAlertModel.id.desc()).limit(limit))
    return [alert_model_to_alert(m) for m in rows]


def scope_spend(session: Session, scope_path: str, currency: str, start: datetime,
                end: datetime) -> int:
    """Rated spend of everything at or below a scope, for usage windows in [start, end)."""
    U = UsageRecordModel
    return int(session.scalar(select(func.coalesce(func.sum(U.charge), 0)).where(
        at_or_below(U.scope_path, scope_path), U.state == RATED, U.currency == currency,
        U.window_start >= start, U.window_start < end)) or 0)


def evaluate_budgets(session: Session, *, now: datetime | None = None,
                     scope_paths: Iterable[str] | None = None) -> list[BudgetAlert]:
    """Record the alerts of every threshold crossed this month (once each). With
    ``scope_paths`` (what the rater just charged), only the budgets on those scopes and the
    scopes above them are evaluated."""
    now = now or utcnow()
    stmt = select(BudgetModel).order_by(BudgetModel.id)
    if scope_paths is not None:
        paths = {a for p in scope_paths for a in ancestor_paths(p)}
        if not paths:
            return []
        stmt = stmt.where(BudgetModel.scope_path.in_(sorted(paths)))
    return _evaluate(session, session.scalars(stmt).all(), now)


def _evaluate(session: Session, budgets: Sequence[BudgetModel],
              now: datetime) -> list[BudgetAlert]:
    # Two raters whose charges together cross a budget cannot both judge it on their own
    # spend alone: a budget's spend is charged to one wallet (its org, its currency), whose
    # row post_transfers locks until commit, so the second rater waits for the first and its
    # spend query (a new snapshot under READ COMMITTED) sees both charges.
    period, start, end = month_bounds(now)
    recorded: list[BudgetAlert] = []
    for b in budgets:
        spend = scope_spend(session, b.scope_path, b.currency, start, end)
        done = set(session.scalars(select(BudgetAlertModel.threshold).where(
            BudgetAlertModel.budget_id == b.id, BudgetAlertModel.period == period)))
        for threshold in effective_thresholds(b.action, json.loads(b.thresholds)):
            if threshold in done or spend * 100 < threshold * b.amount:
                continue
            alert = _record_alert(session, b, period, threshold, spend, now)
            if alert is not None:
                recorded.append(alert)
    return recorded


def _record_alert(session: Session, b: BudgetModel, period: str, threshold: int, spend: int,
                  now: datetime) -> BudgetAlert | None:
    m = BudgetAlertModel(id=new_id("balrt"), budget_id=b.id, scope_path=b.scope_path,
                         period=period, threshold=threshold, spend=spend, amount=b.amount,
                         action=b.action, created_at=now)
    try:
        with session.begin_nested():
            session.add(m)
            session.flush()
    except IntegrityError:
        return None  # another evaluator recorded it first
    alert = alert_model_to_alert(m)
    audit.record(session, actor=EVALUATOR, action="billing.budget.alert", target_type="budget",
                 target_id=b.id, scope_path=b.scope_path,
                 details={"period": period, "threshold": threshold, "spend": spend,
                          "amount": b.amount, "currency": b.currency})
    payload = {"type": "budget.threshold_crossed", "alert": alert.model_dump(mode="json"),
               "currency": b.currency}
    if b.webhook_url:
        session.add(WebhookDeliveryModel(
            id=new_id("whd"), alert_id=m.id, budget_id=b.id, url=b.webhook_url,
            body=json.dumps(payload, sort_keys=True), status="pending", attempts=0,
            next_attempt_at=now))
    if threshold >= 100 and b.action in BLOCKING_ACTIONS:
        events.publish(session, EXCEEDED_TOPIC, {
            "budget_id": b.id, "scope_path": b.scope_path, "action": b.action,
            "period": period, "spend": spend, "amount": b.amount, "currency": b.currency})
    return alert


def launches_blocked(session: Session, scope_path: str, *,
                     now: datetime | None = None) -> list[BudgetAlert]:
    """The 100% alerts this month of blocking budgets on this scope or any scope above it;
    empty when a new launch in ``scope_path`` may proceed. Only budgets that still exist
    (and still block) count: deleting an exhausted budget unblocks launches at once."""
    period, _, _ = month_bounds(now or utcnow())
    A, B = BudgetAlertModel, BudgetModel
    rows = session.scalars(select(A).join(B, B.id == A.budget_id).where(
        A.scope_path.in_(ancestor_paths(scope_path)), A.period == period,
        A.threshold >= 100,
        B.action.in_(BLOCKING_ACTIONS)).order_by(A.id))
    return [alert_model_to_alert(m) for m in rows]
