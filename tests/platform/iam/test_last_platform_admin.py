"""The last platform administrator stays, even when two remove each other at once (the
count and the change are serialized by the policy-version row lock), on SQLite and
PostgreSQL."""

from __future__ import annotations

import threading

from sqlalchemy import select

from aicloud.platform import audit, iam
from aicloud.platform.iam.models import RoleBindingModel
from aicloud.shared.db import Database
from aicloud.shared.errors import Conflict

ACTOR = audit.Actor.system("test")


def _two_admins(db: Database) -> tuple[str, str]:
    with db.transaction() as s:
        one = iam.bootstrap_admin(s, email="one@example.org", password="x" * 12).user.id
        two = iam.bootstrap_admin(s, email="two@example.org", password="x" * 12).user.id
    return one, two


def _race(db: Database, actions: list) -> list[str]:  # type: ignore[type-arg]
    barrier = threading.Barrier(len(actions))
    results: list[str] = []

    def run(action) -> None:  # type: ignore[no-untyped-def]
        barrier.wait()
        try:
            with db.transaction() as s:
                action(s)
            results.append("ok")
        except Conflict:
            results.append("conflict")

    threads = [threading.Thread(target=run, args=(a,)) for a in actions]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    return sorted(results)


def test_two_admins_disabling_each_other_leave_one(db: Database) -> None:
    one, two = _two_admins(db)
    results = _race(db, [
        lambda s: iam.update_user(s, two, iam.UserUpdate(disabled=True), actor=ACTOR),
        lambda s: iam.update_user(s, one, iam.UserUpdate(disabled=True), actor=ACTOR),
    ])
    assert results == ["conflict", "ok"]
    with db.transaction() as s:
        assert len(iam.platform_admins(s)) == 1


def test_two_admins_unbinding_each_other_leave_one(db: Database) -> None:
    one, two = _two_admins(db)
    with db.transaction() as s:
        bindings = {p: b for b, p in s.execute(select(
            RoleBindingModel.id, RoleBindingModel.principal_id).where(
            RoleBindingModel.role_id == "platform-admin"))}
    results = _race(db, [
        lambda s: iam.delete_binding(s, bindings[one], actor=ACTOR),
        lambda s: iam.delete_binding(s, bindings[two], actor=ACTOR),
    ])
    assert results == ["conflict", "ok"]
    with db.transaction() as s:
        assert len(iam.platform_admins(s)) == 1
