"""The last platform administrator stays (not disabled, unbound or denied at the platform),
even when two remove each other at once (the count and the change are serialized by the
policy-version row lock), on SQLite and PostgreSQL; bootstrap brings a disabled one back."""

from __future__ import annotations

import threading

import pytest
from sqlalchemy import select

from aicloud.platform import audit, iam
from aicloud.platform.iam.models import RoleBindingModel
from aicloud.shared.db import Database
from aicloud.shared.errors import Conflict, Unauthenticated

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


def test_a_deny_at_the_platform_cannot_disarm_the_last_admin(db: Database) -> None:
    with db.transaction() as s:
        one = iam.bootstrap_admin(s, email="one@example.org", password="x" * 12).user.id
    with pytest.raises(Conflict), db.transaction() as s:
        iam.create_deny_binding(s, iam.PLATFORM, iam.DenyBindingCreate(
            principal_id=one, permission="*"), actor=ACTOR, grantor=None)
    with db.transaction() as s:
        two = iam.bootstrap_admin(s, email="two@example.org", password="x" * 12).user.id
        iam.create_deny_binding(s, iam.PLATFORM, iam.DenyBindingCreate(
            principal_id=one, permission="iam.orgs.delete"), actor=ACTOR, grantor=None)
        assert two in iam.platform_admins(s)


def test_bootstrap_brings_a_disabled_admin_back(db: Database) -> None:
    one, _ = _two_admins(db)
    with db.transaction() as s:
        token = iam.login(s, email="one@example.org", password="x" * 12).token
        iam.update_user(s, one, iam.UserUpdate(disabled=True), actor=ACTOR)
    with db.transaction() as s:
        again = iam.bootstrap_admin(s, email="one@example.org")
        assert not again.created and not again.user.disabled
        assert one in iam.platform_admins(s)
    # Its old session stays revoked; the password works again.
    with pytest.raises(Unauthenticated), db.transaction() as s:
        iam.resolve_token(s, token)
    with db.transaction() as s:
        assert iam.login(s, email="one@example.org", password="x" * 12).token
