"""Idle policies: "GPU utilization below X % for N minutes: stop; stopped for D days: delete".

Owned by the administrators of a scope (organization, department or project), for one
resource class (an instance type) or all of them. Every policy on a resource's path applies,
so a project can add a stricter rule but never loosen its organization's. Policy owns the
rules and the verdict (is this resource idle, since when, on what evidence); the product that
owns the resource acts on it (warns, stops, deletes) and checks exemptions.

The verdict reads the resource's GPU utilization from ``platform/metrics``: one-minute
buckets, each GPU's average in the bucket; a minute counts as idle when every GPU of the
resource averaged below the threshold. The idle run is the unbroken stretch of idle minutes
ending now; a minute without data breaks it (no data is not evidence of idleness), and so
does a last report older than two minutes (a silent node).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from pydantic import BaseModel, Field, model_validator
from sqlalchemy import select
from sqlalchemy.orm import Session

from aicloud.platform import audit, metrics
from aicloud.platform.policy.models import IdlePolicyModel
from aicloud.shared.clock import utcnow
from aicloud.shared.errors import ValidationFailed
from aicloud.shared.ids import new_id

ALL_CLASSES = "*"  # in the API and CLI: the policy applies to every instance type
IDLE_METRIC = "gpu_utilization_pct"
MAX_EVIDENCE_MINUTES = 180


class IdlePolicySpec(BaseModel):
    threshold_pct: float = Field(gt=0, le=100, description="GPU utilization below this is idle")
    idle_minutes: int = Field(ge=5, le=43_200, description="Idle this long: stop")
    warn_minutes: int = Field(default=5, ge=1, le=1_440,
                              description="The warning goes out this long before the stop "
                                          "(and before a deletion)")
    delete_after_days: int | None = Field(default=None, ge=1, le=3_650,
                                          description="Stopped this long: delete (none: keep)")

    @model_validator(mode="after")
    def _warn_before_stop(self) -> IdlePolicySpec:
        if self.warn_minutes >= self.idle_minutes:
            raise ValueError("warn_minutes must be shorter than idle_minutes")
        return self


class IdlePolicy(IdlePolicySpec):
    id: str
    scope_id: str
    scope_path: str
    instance_type: str = Field(description=f"An instance type, or {ALL_CLASSES!r} for all")
    updated_at: datetime
    updated_by: str


def _to_policy(m: IdlePolicyModel) -> IdlePolicy:
    return IdlePolicy(id=m.id, scope_id=m.scope_id, scope_path=m.scope_path,
                      instance_type=m.resource_class or ALL_CLASSES,
                      threshold_pct=m.threshold_pct, idle_minutes=m.idle_minutes,
                      warn_minutes=m.warn_minutes, delete_after_days=m.delete_after_days,
                      updated_at=m.updated_at, updated_by=m.updated_by)


def _scope_id(scope_path: str) -> str:
    parts = [p for p in scope_path.split("/") if p]
    if not parts:
        raise ValidationFailed("an idle policy is set on an organization, department or "
                               "project", field="scope_id")
    return parts[-1]


def _class(instance_type: str) -> str:
    if instance_type == ALL_CLASSES:
        return ""
    if not instance_type or len(instance_type) > 64 or not all(
            c.isalnum() or c in "._-" for c in instance_type):
        raise ValidationFailed(f"instance type {instance_type[:80]!r}: a type name, or "
                               f"{ALL_CLASSES!r} for every type", field="instance_type")
    return instance_type


def set_idle_policy(session: Session, *, actor: audit.Actor, scope_path: str,
                    instance_type: str, spec: IdlePolicySpec) -> IdlePolicy:
    """Create or change the scope's policy for one instance type (or all), audited."""
    scope_id, cls = _scope_id(scope_path), _class(instance_type)
    m = session.scalar(select(IdlePolicyModel).where(
        IdlePolicyModel.scope_id == scope_id, IdlePolicyModel.resource_class == cls)
        .with_for_update())
    fields = spec.model_dump()
    old = None if m is None else {k: getattr(m, k) for k in fields}
    if m is None:
        m = IdlePolicyModel(id=new_id("idlep"), scope_id=scope_id, scope_path=scope_path,
                            resource_class=cls)
        session.add(m)
    for k, v in fields.items():
        setattr(m, k, v)
    m.updated_at, m.updated_by = utcnow(), actor.id
    session.flush()
    audit.record(session, actor=actor, action="policy.idle_policy.set",
                 target_type="idle_policy", target_id=m.id, scope_path=scope_path,
                 changes=audit.diff(old, fields),
                 details={"instance_type": instance_type})
    return _to_policy(m)


def delete_idle_policy(session: Session, *, actor: audit.Actor, scope_path: str,
                       instance_type: str) -> bool:
    """Remove the scope's policy for one instance type (or all); False when there was none."""
    m = session.scalar(select(IdlePolicyModel).where(
        IdlePolicyModel.scope_id == _scope_id(scope_path),
        IdlePolicyModel.resource_class == _class(instance_type)))
    if m is None:
        return False
    audit.record(session, actor=actor, action="policy.idle_policy.delete",
                 target_type="idle_policy", target_id=m.id, scope_path=m.scope_path,
                 changes=audit.diff({"threshold_pct": m.threshold_pct,
                                     "idle_minutes": m.idle_minutes}, None),
                 details={"instance_type": instance_type})
    session.delete(m)
    session.flush()
    return True


def list_idle_policies(session: Session, scope_path: str) -> list[IdlePolicy]:
    """The policies that apply at ``scope_path``: its own and those of every scope above."""
    parts = [p for p in scope_path.split("/") if p]
    return [_to_policy(m) for m in session.scalars(
        select(IdlePolicyModel).where(IdlePolicyModel.scope_id.in_(parts))
        .order_by(IdlePolicyModel.scope_path, IdlePolicyModel.resource_class))]


def all_idle_policies(session: Session) -> list[IdlePolicy]:
    return [_to_policy(m) for m in session.scalars(
        select(IdlePolicyModel).order_by(IdlePolicyModel.scope_path, IdlePolicyModel.id))]


def applicable(policies: list[IdlePolicy], scope_path: str,
               instance_type: str) -> list[IdlePolicy]:
    """The policies that govern a resource at ``scope_path`` of ``instance_type``, the one
    that acts soonest first."""
    return sorted((p for p in policies
                   if (scope_path == p.scope_path or scope_path.startswith(p.scope_path + "/"))
                   and p.instance_type in (ALL_CLASSES, instance_type)),
                  key=lambda p: (p.idle_minutes, p.id))


# --- the verdict ---------------------------------------------------------------------------


@dataclass(frozen=True)
class IdleRun:
    """A resource idle from ``since`` to ``until`` (the end of its last reported minute), and
    the minutes that show it: (minute, the busiest GPU's average, the busiest GPU's peak)."""

    since: datetime
    until: datetime
    threshold_pct: float
    minutes: list[tuple[datetime, float, float]]

    @property
    def length(self) -> timedelta:
        return self.until - self.since

    def evidence(self, source: str = "") -> dict[str, Any]:
        """The window as the audit log and the instance's events keep it."""
        shown = self.minutes[-MAX_EVIDENCE_MINUTES:]
        avgs = [m[1] for m in self.minutes]
        return {"metric": IDLE_METRIC, "threshold_pct": self.threshold_pct,
                "from": self.since.isoformat(), "to": self.until.isoformat(),
                "idle_minutes": int(self.length.total_seconds() // 60),
                "buckets": len(self.minutes), "source": source,
                "max_avg_pct": round(max(avgs), 2),
                "mean_pct": round(sum(avgs) / len(avgs), 2),
                "peak_pct": round(max(m[2] for m in self.minutes), 2),
                "series": [[m[0].isoformat(), round(m[1], 2), round(m[2], 2)]
                           for m in shown],
                "series_truncated": len(self.minutes) > len(shown)}

    def summary(self) -> str:
        avgs = [m[1] for m in self.minutes]
        return (f"GPU utilization below {self.threshold_pct:g}% for "
                f"{int(self.length.total_seconds() // 60)} min (from "
                f"{self.since:%Y-%m-%d %H:%M} to {self.until:%H:%M} UTC; per-minute average "
                f"at most {max(avgs):.1f}%, mean {sum(avgs) / len(avgs):.1f}%)")


def idle_run(session: Session, resource_type: str, resource_id: str, *,
             threshold_pct: float, now: datetime, lookback: timedelta
             ) -> tuple[IdleRun | None, str]:
    """The resource's current idle run over the last ``lookback`` (None: busy now, no recent
    data, or no GPU data at all), and the source of its data (nvml / simulated)."""
    series = metrics.series_of(session, resource_type, resource_id, start=now - lookback,
                               end=now + metrics.RESOLUTION, step=metrics.RESOLUTION,
                               metrics=[IDLE_METRIC])
    if not series:
        return None, ""
    # Per minute, the busiest GPU: a resource is idle only when all of its GPUs are.
    gpus = {s.gpu for s in series}
    minutes: dict[datetime, list[tuple[float, float]]] = {}
    for s in series:
        for p in s.points:
            minutes.setdefault(p.at, []).append((p.avg, p.max))
    source = ",".join(sorted({s.source for s in series}))
    run: list[tuple[datetime, float, float]] = []
    expected = None
    for at in sorted(minutes, reverse=True):
        values = minutes[at]
        if expected is None and at + 2 * metrics.RESOLUTION < now:
            return None, source  # the last report is stale: the node is silent
        if expected is not None and at != expected:
            break  # a minute without data
        if len(values) < len(gpus):
            break  # a GPU of the resource did not report that minute
        busiest = max(v[0] for v in values)
        if busiest >= threshold_pct:
            break
        run.append((at, busiest, max(v[1] for v in values)))
        expected = at - metrics.RESOLUTION
    if not run:
        return None, source
    run.reverse()
    until = min(now, run[-1][0] + metrics.RESOLUTION)
    return IdleRun(since=run[0][0], until=until, threshold_pct=threshold_pct,
                   minutes=run), source
