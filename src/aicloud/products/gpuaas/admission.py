"""Launch: validation, admission (quota, type allowance, budget, billing hold) in ONE
transaction, and the first two transitions (requested -> admitted).

A refusal names exactly which limit stopped the launch and by how much; nothing of a refused
launch is stored (the transaction rolls back), so a corrected retry starts clean.

Admission is serialized per organization: every quota, budget and the wallet hold of a launch
lie on the org's path, so a launch first takes the org tree lock (``iam.lock_org_tree``, an
advisory lock on PostgreSQL; SQLite's ``BEGIN IMMEDIATE`` already admits one writer at a time)
and only then reads usage, limits and its project. Two launches can then never both pass a
check that only one of them fits, and a launch and a concurrent delete of its project are
ordered (the later one sees the earlier: 404 for the launch, or 409 for the delete).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from aicloud.platform import audit, billing, iam, policy
from aicloud.products.gpuaas import capacity
from aicloud.products.gpuaas.instances import (
    create_instance_row,
    gpus_in_use,
    instance_view,
    switch_instance_status,
)
from aicloud.products.gpuaas.lifecycle import InstanceState
from aicloud.products.gpuaas.models import InstanceModel, InstanceTypeModel, TypeAllowanceModel
from aicloud.products.gpuaas.placement import PlacementRequest, never_fits
from aicloud.products.gpuaas.schemas import Instance, InstanceLaunch
from aicloud.shared.errors import Conflict, NotFound, ValidationFailed
from aicloud.shared.ids import new_id

# The hold reserves this much run time at admission, like a card authorization.
MIN_BILLABLE_SECONDS = 60
HOLD_TTL = timedelta(hours=24)


class BudgetBlocked(Conflict):
    code = "budget-blocked"
    title = "A budget blocks new launches"


class InsufficientFunds(Conflict):
    code = "insufficient-funds"
    title = "The wallet cannot cover the minimum billable period"


class CannotPlace(ValidationFailed):
    code = "cannot-place"
    title = "No node can ever hold this instance"


@dataclass(frozen=True)
class Requester:
    principal_id: str
    org_id: str
    project_id: str
    scope_path: str


def scope_ids(scope_path: str) -> list[str]:
    return [p for p in scope_path.split("/") if p]


def get_type(session: Session, name: str) -> InstanceTypeModel:
    t = session.get(InstanceTypeModel, name)
    if t is None:
        known = ", ".join(session.scalars(select(InstanceTypeModel.name)
                                          .order_by(InstanceTypeModel.name)))
        raise ValidationFailed(f"unknown instance type {name!r}; known types: {known}",
                               field="instance_type")
    return t


def check_type_allowed(session: Session, scope_path: str, type_name: str) -> None:
    """Every scope on the path that lists allowed types must list this one."""
    rows = session.execute(select(TypeAllowanceModel.scope_id, TypeAllowanceModel.type_name)
                           .where(TypeAllowanceModel.scope_id.in_(scope_ids(scope_path))))
    allowed: dict[str, set[str]] = {}
    for scope_id, name in rows:
        allowed.setdefault(scope_id, set()).add(name)
    for scope_id, names in allowed.items():
        if type_name not in names:
            raise Conflict(f"instance type {type_name!r} is not allowed in {scope_id} "
                           f"(allowed: {', '.join(sorted(names))})", limit="instance-type")


def min_period_charge(session: Session, org_id: str, t: InstanceTypeModel,
                      at: datetime) -> tuple[int, str] | None:
    """What MIN_BILLABLE_SECONDS of this type cost the org, or None when nothing is priced."""
    book = billing.PriceBook(session)
    total, currency = 0, None
    for meter, dim, qty in usage_per_second(t.gpu_model, t.gpu_count, t.vcpus, t.memory_gib):
        try:
            price = book.resolve(org_id, meter, dim, at)
        except NotFound:
            continue
        currency = currency or price.currency
        total += price.charge_for(qty * MIN_BILLABLE_SECONDS)
    return None if currency is None else (total, currency)


def usage_per_second(gpu_model: str, gpu_count: int, vcpus: int,
                     memory_gib: int) -> list[tuple[str, str, int]]:
    """(meter, dimension value, quantity per second of run time) for one instance."""
    rows = [("vcpu_seconds", "", vcpus), ("memory_gib_seconds", "", memory_gib)]
    if gpu_count:
        rows.insert(0, ("gpu_seconds", gpu_model, gpu_count))
    return rows


def launch(session: Session, spec: InstanceLaunch, *, who: Requester, actor: audit.Actor,
           idempotency_key: str | None, now: datetime) -> Instance:
    iam.lock_org_tree(session, who.org_id)
    # Read the project again under the lock: deleted meanwhile -> 404; moved -> its new path
    # is the one whose quotas and budgets apply.
    path = iam.scope_path(session, who.project_id)
    if path.split("/")[1] != who.org_id:
        raise NotFound(f"project {who.project_id} not found")
    who = replace(who, scope_path=path)
    if idempotency_key:
        existing = session.scalar(select(InstanceModel).where(
            InstanceModel.project_id == who.project_id,
            InstanceModel.idempotency_key == idempotency_key))
        if existing is not None:
            return instance_view(session, existing)
    t = get_type(session, spec.instance_type)
    if spec.template == "batch" and not spec.command:
        raise ValidationFailed("a batch instance needs a command", field="command")
    inst_id = new_id("inst")
    if t.gpu_count < 1:
        raise ValidationFailed(f"instance type {t.name} has {t.gpu_count} GPUs; GPU instances "
                               "need at least 1", field="instance_type")
    # One indexed read of the maintained capacity (the largest node of the model), not a
    # rebuild of every node: admission's cost does not grow with the pool.
    never = never_fits(PlacementRequest(inst_id, t.gpu_model, t.gpu_count),
                       capacity.largest_installed(session, t.gpu_model),
                       lambda: capacity.known_models(session))
    if never is not None:
        raise CannotPlace(never.reason, reason_code=never.code.value)
    check_type_allowed(session, who.scope_path, t.name)
    policy.enforce_quotas(
        session, who.scope_path, {f"gpu:{t.gpu_model}": t.gpu_count, "gpu": t.gpu_count},
        lambda scope, key: gpus_in_use(session, scope, key.split(":", 1)[1]
                                       if ":" in key else None))
    blocked = billing.launches_blocked(session, who.scope_path, now=now)
    if blocked:
        b = blocked[0]
        raise BudgetBlocked(f"the budget of {b.scope_path} is exhausted for {b.period}: spent "
                            f"{b.spend} of {b.amount} micro-units (over by "
                            f"{b.spend - b.amount}); its action {b.action!r} blocks launches",
                            budget_id=b.budget_id, scope_path=b.scope_path)
    inst = InstanceModel(
        id=inst_id, name=spec.name, org_id=who.org_id, project_id=who.project_id,
        scope_path=who.scope_path, created_by=who.principal_id,
        idempotency_key=idempotency_key, instance_type=t.name, gpu_model=t.gpu_model,
        gpu_count=t.gpu_count, vcpus=t.vcpus, memory_gib=t.memory_gib,
        template=spec.template, command=spec.command, priority=spec.priority,
        queue_order=int(now.timestamp() * 1_000_000), created_at=now)
    create_instance_row(session, inst, actor=actor, at=now)
    charge = min_period_charge(session, who.org_id, t, now)
    if charge is not None and charge[0] > 0:
        amount, currency = charge
        wallet = billing.org_wallet(session, who.org_id, currency)
        revenue = billing.platform_account(session, "revenue", currency)
        try:
            hold = billing.create_hold(
                session, actor=actor, account_id=wallet.id, counter_account_id=revenue.id,
                amount=amount, currency=currency, idempotency_key=f"gpuaas:{inst_id}",
                ttl=HOLD_TTL, reason="admission", cause_type="instance", cause_id=inst_id,
                now=now)
        except Conflict as e:
            available = e.extra.get("available")
            raise InsufficientFunds(
                f"the wallet of {who.org_id} cannot cover the minimum billable period of "
                f"{MIN_BILLABLE_SECONDS}s of {t.name}: needs {amount} micro-{currency}, "
                f"available {available} (short by "
                f"{amount - available if isinstance(available, int) else 'unknown'})",
                needed=amount, available=available) from e
        inst.hold_id = hold.id
    switch_instance_status(session, inst, InstanceState.ADMITTED, actor=actor, at=now,
                           reason="admitted: type allowed, within quota and budget"
                                  + (", minimum period held" if inst.hold_id else ""))
    return instance_view(session, inst)
