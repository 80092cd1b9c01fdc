"""Enforcing idle policies on GPU instances: warn, then stop; warn, then delete.

Level-triggered: each pass reads the policies and the running (or long-stopped) instances
they govern, asks policy for each one's idle run (``platform/policy``, from the metrics the
node reported), and takes the one step the instance needs now:

- idle for ``idle_minutes - warn_minutes`` and not warned since this idle run began: warn
  (an instance event, an outbox event on ``WARNING_TOPIC`` for notification consumers and
  webhooks, an audit event);
- idle for ``idle_minutes`` and warned at least ``warn_minutes`` ago in this idle run: stop,
  with the reason (the policy and a summary of the window) in the instance's transitions
  and the whole metric window in its ``idle_stop`` event and the audit log;
- stopped for ``delete_after_days`` (by anyone): warn, then, ``warn_minutes`` later at the
  earliest, delete the instance (its row, history and events; its node removes the workload's
  files once the row is gone).

A warning that came late (a worker was down) still gives the user its full notice: the
action waits ``warn_minutes`` after it. Busy again after a warning: the next idle run needs
a new warning.

Exempt: an instance whose launcher holds ``policy.idle.exempt`` on it (a binding at its
project or on the instance itself).

Several workers may run this at once: every step happens in a transaction that holds the
instance's row lock and re-checks the row and its events under it, so a step is taken once
whoever gets there first.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from aicloud.platform import audit, iam, policy
from aicloud.products.gpuaas.instances import request_stop
from aicloud.products.gpuaas.lifecycle import InstanceState
from aicloud.products.gpuaas.models import InstanceEventModel, InstanceModel
from aicloud.products.gpuaas.telemetry import RESOURCE_TYPE
from aicloud.shared import events
from aicloud.shared.clock import Clock, SystemClock
from aicloud.shared.db import Database
from aicloud.shared.errors import NotFound
from aicloud.shared.ids import new_id

log = logging.getLogger(__name__)
ACTOR = audit.Actor.system("gpuaas-idle-policy")
WARNING_TOPIC = "gpuaas.instance.idle_warning"
S = InstanceState
# Read a little more than the policy's window, to see where the idle run began.
_LOOKBACK_MARGIN = timedelta(minutes=15)


def _event(session: Session, inst: InstanceModel, kind: str, message: str,
           details: dict[str, object], at: datetime) -> None:
    session.add(InstanceEventModel(id=new_id("iev"), instance_id=inst.id, kind=kind,
                                   message=message[:512], details=details, at=at))


def _last_event(session: Session, instance_id: str, kind: str,
                since: datetime) -> InstanceEventModel | None:
    return session.scalar(select(InstanceEventModel).where(
        InstanceEventModel.instance_id == instance_id, InstanceEventModel.kind == kind,
        InstanceEventModel.at >= since).order_by(InstanceEventModel.at.desc()).limit(1))


def launcher_is_exempt(session: Session, inst: InstanceModel) -> bool:
    """The principal that launched the instance holds the exemption on it."""
    try:
        principal = iam.Principal(id=inst.created_by,
                                  kind=iam.principal_kind(inst.created_by))
    except NotFound:
        return False
    return iam.policy_snapshot(session).can(
        principal, policy.EXEMPT_PERMISSION,
        iam.ResourceRef("instance", inst.id, inst.project_id))


@dataclass
class IdlePolicyEnforcer:
    db: Database
    clock: Clock = field(default_factory=SystemClock)
    is_exempt: Callable[[Session, InstanceModel], bool] = launcher_is_exempt

    def run_once(self) -> int:
        """One pass; returns the steps taken (warnings, stops, deletions)."""
        with self.db.read_transaction() as session:
            policies = policy.all_idle_policies(session)
            if not policies:
                return 0
            running = self._governed(session, policies, S.RUNNING)
            stopped = self._governed(session, [p for p in policies if p.delete_after_days],
                                     S.STOPPED)
        steps = 0
        for instance_id in running:
            steps += self._step(instance_id, self._running_step)
        for instance_id in stopped:
            steps += self._step(instance_id, self._stopped_step)
        return steps

    @staticmethod
    def _governed(session: Session, policies: list[policy.IdlePolicy],
                  state: InstanceState) -> list[str]:
        """Ids of the instances in ``state`` under some policy's scope (type checked later)."""
        found: set[str] = set()
        for path in sorted({p.scope_path for p in policies}):
            stmt = select(InstanceModel.id).where(
                InstanceModel.state == state.value,
                (InstanceModel.scope_path == path)
                | InstanceModel.scope_path.startswith(path + "/"))
            if state is S.RUNNING:
                stmt = stmt.where(InstanceModel.stop_requested_at.is_(None))
            found.update(session.scalars(stmt))
        return sorted(found)

    def _step(self, instance_id: str,
              step: Callable[[Session, InstanceModel, list[policy.IdlePolicy], datetime],
                             bool]) -> int:
        try:
            with self.db.transaction() as session:
                inst = session.scalar(select(InstanceModel).where(
                    InstanceModel.id == instance_id).with_for_update()
                    .execution_options(populate_existing=True))
                if inst is None:
                    return 0
                rules = policy.applicable(policy.all_idle_policies(session), inst.scope_path,
                                          inst.instance_type)
                if not rules or self.is_exempt(session, inst):
                    return 0
                return int(step(session, inst, rules, self.clock.now()))
        except Exception:  # one instance's trouble does not stop the others
            log.exception("idle policy: instance %s", instance_id)
            return 0

    def _running_step(self, session: Session, inst: InstanceModel,
                      rules: list[policy.IdlePolicy], now: datetime) -> bool:
        if inst.state != S.RUNNING.value or inst.stop_requested_at is not None:
            return False  # moved on since the pass read it
        for rule in rules:
            run, source = policy.idle_run(
                session, RESOURCE_TYPE, inst.id, threshold_pct=rule.threshold_pct, now=now,
                lookback=timedelta(minutes=rule.idle_minutes) + _LOOKBACK_MARGIN)
            if run is None:
                continue
            minutes = run.length.total_seconds() / 60
            if minutes < rule.idle_minutes - rule.warn_minutes:
                continue
            warned = _last_event(session, inst.id, "idle_warning", run.since)
            if warned is None:
                self._warn(session, inst, rule, "stop", now + timedelta(
                    minutes=max(rule.warn_minutes,
                                rule.idle_minutes - minutes)), run, source, now)
                return True
            if (minutes >= rule.idle_minutes
                    and now - warned.at >= timedelta(minutes=rule.warn_minutes)):
                self._stop(session, inst, rule, run, source, now)
                return True
        return False

    def _warn(self, session: Session, inst: InstanceModel, rule: policy.IdlePolicy,
              action: str, action_at: datetime, run: policy.IdleRun | None, source: str,
              now: datetime) -> None:
        kind = "idle_warning" if action == "stop" else "idle_delete_warning"
        what = (f"idle ({run.summary()})" if run is not None
                else f"stopped for {rule.delete_after_days} day(s)")
        message = (f"will be {'stopped' if action == 'stop' else 'deleted'} at "
                   f"{action_at:%Y-%m-%d %H:%M} UTC by idle policy {rule.id} of "
                   f"{rule.scope_path}: {what}")
        details: dict[str, object] = {"policy_id": rule.id, "action": action,
                                      "action_at": action_at.isoformat()}
        if run is not None:
            details["evidence"] = run.evidence(source)
        _event(session, inst, kind, message, details, now)
        events.publish(session, WARNING_TOPIC, {
            "instance_id": inst.id, "name": inst.name, "org_id": inst.org_id,
            "project_id": inst.project_id, "scope_path": inst.scope_path,
            "created_by": inst.created_by, "policy_id": rule.id, "action": action,
            "action_at": action_at.isoformat(), "message": message})
        audit.record(session, actor=ACTOR, action=f"gpuaas.instance.{kind}",
                     target_type="instance", target_id=inst.id, scope_path=inst.scope_path,
                     details=details, occurred_at=now)

    def _stop(self, session: Session, inst: InstanceModel, rule: policy.IdlePolicy,
              run: policy.IdleRun, source: str, now: datetime) -> None:
        reason = f"idle policy {rule.id} of {rule.scope_path}: {run.summary()}"
        evidence = run.evidence(source)
        request_stop(session, inst.id, reason=reason, actor=ACTOR, now=now)
        _event(session, inst, "idle_stop", reason, {"policy_id": rule.id,
                                                   "evidence": evidence}, now)
        audit.record(session, actor=ACTOR, action="gpuaas.instance.idle_stop",
                     target_type="instance", target_id=inst.id, scope_path=inst.scope_path,
                     details={"policy_id": rule.id, "reason": reason, "evidence": evidence},
                     occurred_at=now)

    def _stopped_step(self, session: Session, inst: InstanceModel,
                      rules: list[policy.IdlePolicy], now: datetime) -> bool:
        if inst.state != S.STOPPED.value or inst.ended_at is None:
            return False
        for rule in sorted((r for r in rules if r.delete_after_days),
                           key=lambda r: (r.delete_after_days, r.id)):
            assert rule.delete_after_days is not None
            due = inst.ended_at + timedelta(days=rule.delete_after_days)
            notice = timedelta(minutes=rule.warn_minutes)
            if now < due - notice:
                continue
            warned = _last_event(session, inst.id, "idle_delete_warning", inst.ended_at)
            if warned is None:
                self._warn(session, inst, rule, "delete", max(due, now + notice), None, "",
                           now)
                return True
            if now >= due and now - warned.at >= notice:
                self._delete(session, inst, rule, now)
                return True
        return False

    def _delete(self, session: Session, inst: InstanceModel, rule: policy.IdlePolicy,
                now: datetime) -> None:
        reason = (f"idle policy {rule.id} of {rule.scope_path}: stopped since "
                  f"{inst.ended_at:%Y-%m-%d %H:%M} UTC, over {rule.delete_after_days} day(s)")
        audit.record(session, actor=ACTOR, action="gpuaas.instance.delete",
                     target_type="instance", target_id=inst.id, scope_path=inst.scope_path,
                     changes=audit.diff({"state": inst.state, "name": inst.name}, None),
                     details={"policy_id": rule.id, "reason": reason}, occurred_at=now)
        # Its transitions, events and GPU assignments go with it (foreign keys cascade).
        session.execute(delete(InstanceModel).where(InstanceModel.id == inst.id))
        session.expunge(inst)
