"""Quotas: limits per scope and resource key, and the admission check against them.

A quota on a scope caps the sum over that scope and everything below it. The product that
asks computes current usage (it owns the resources); policy owns the limits and the wording
of a refusal, which names the scope, the limit and by how much the request exceeds it.

Setting or clearing a limit takes the org tree lock (``iam.lock_org_tree``), the lock every
admission in the org takes before it checks quotas: a limit changes between launches, never
in the middle of one, and two concurrent first sets of one limit cannot both insert it.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from pydantic import BaseModel
from sqlalchemy import select
from sqlalchemy.orm import Session

from aicloud.platform import audit, iam
from aicloud.platform.policy.models import QuotaModel
from aicloud.shared.clock import utcnow
from aicloud.shared.errors import Conflict, ValidationFailed
from aicloud.shared.ids import new_id

_KEY = re.compile(r"^[a-z][a-z0-9_]*(:[A-Za-z0-9_.-]+)?$")


class Quota(BaseModel):
    id: str
    scope_id: str
    scope_path: str
    resource_key: str
    limit: int


class QuotaExceeded(Conflict):
    code = "quota-exceeded"
    title = "The request exceeds a quota"


def _to_quota(m: QuotaModel) -> Quota:
    return Quota(id=m.id, scope_id=m.scope_id, scope_path=m.scope_path,
                 resource_key=m.resource_key, limit=m.limit_value)


def _scope_id(scope_path: str) -> str:
    parts = [p for p in scope_path.split("/") if p]
    if not parts:
        raise ValidationFailed("a quota needs an organization, department or project scope",
                               field="scope_path")
    return parts[-1]


def _org_id(scope_path: str) -> str:
    _scope_id(scope_path)  # refuses the platform scope
    return next(p for p in scope_path.split("/") if p)


def set_quota(session: Session, *, actor: audit.Actor, scope_path: str, resource_key: str,
              limit: int) -> Quota:
    """Create or change the limit of ``resource_key`` at ``scope_path`` (audited)."""
    if not _KEY.match(resource_key):
        raise ValidationFailed(f"resource key {resource_key!r} must look like 'gpu:H100'",
                               field="resource_key")
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 0:
        raise ValidationFailed("a quota limit is a whole number >= 0", field="limit")
    scope_id = _scope_id(scope_path)
    iam.lock_org_tree(session, _org_id(scope_path))
    m = session.scalar(select(QuotaModel).where(QuotaModel.scope_id == scope_id,
                                                QuotaModel.resource_key == resource_key))
    old = None if m is None else {"limit": m.limit_value}
    if m is None:
        m = QuotaModel(id=new_id("quota"), scope_id=scope_id, scope_path=scope_path,
                       resource_key=resource_key, limit_value=limit, updated_at=utcnow())
        session.add(m)
    else:
        m.limit_value, m.updated_at = limit, utcnow()
    session.flush()
    audit.record(session, actor=actor, action="policy.quota.set", target_type="quota",
                 target_id=m.id, scope_path=scope_path,
                 changes=audit.diff(old, {"limit": limit}),
                 details={"resource_key": resource_key})
    return _to_quota(m)


def clear_quota(session: Session, *, actor: audit.Actor, scope_path: str,
                resource_key: str) -> bool:
    """Remove a limit; False when there was none."""
    iam.lock_org_tree(session, _org_id(scope_path))
    m = session.scalar(select(QuotaModel).where(QuotaModel.scope_id == _scope_id(scope_path),
                                                QuotaModel.resource_key == resource_key))
    if m is None:
        return False
    audit.record(session, actor=actor, action="policy.quota.clear", target_type="quota",
                 target_id=m.id, scope_path=m.scope_path,
                 changes=audit.diff({"limit": m.limit_value}, None),
                 details={"resource_key": resource_key})
    session.delete(m)
    session.flush()
    return True


def list_quotas(session: Session, scope_path: str) -> list[Quota]:
    """Quotas that apply to ``scope_path``: its own and those of every scope above it."""
    parts = [p for p in scope_path.split("/") if p]
    return [_to_quota(m) for m in session.scalars(
        select(QuotaModel).where(QuotaModel.scope_id.in_(parts))
        .order_by(QuotaModel.scope_path, QuotaModel.resource_key))]


@dataclass(frozen=True)
class QuotaViolation:
    scope_path: str
    resource_key: str
    limit: int
    in_use: int
    requested: int

    @property
    def excess(self) -> int:
        return self.in_use + self.requested - self.limit

    def message(self) -> str:
        return (f"quota {self.resource_key} at {self.scope_path}: limit {self.limit}, "
                f"{self.in_use} in use, {self.requested} requested, exceeds by {self.excess}")


def check_quotas(session: Session, scope_path: str, requested: Mapping[str, int],
                 usage: Callable[[str, str], int]) -> list[QuotaViolation]:
    """Every quota the request would break. ``usage(scope_path, resource_key)`` is what is in
    use now at or below that scope, computed by the product that owns the resources."""
    violations: list[QuotaViolation] = []
    for q in list_quotas(session, scope_path):
        amount = requested.get(q.resource_key, 0)
        if amount <= 0:
            continue
        in_use = usage(q.scope_path, q.resource_key)
        if in_use + amount > q.limit:
            violations.append(QuotaViolation(q.scope_path, q.resource_key, q.limit, in_use,
                                             amount))
    return violations


def enforce_quotas(session: Session, scope_path: str, requested: Mapping[str, int],
                   usage: Callable[[str, str], int]) -> None:
    """Raise QuotaExceeded naming every broken limit."""
    violations = check_quotas(session, scope_path, requested, usage)
    if violations:
        raise QuotaExceeded("; ".join(v.message() for v in violations),
                            violations=[{"scope_path": v.scope_path,
                                         "resource_key": v.resource_key, "limit": v.limit,
                                         "in_use": v.in_use, "requested": v.requested,
                                         "excess": v.excess} for v in violations])
