"""Quotas: set/change/clear (audited), limits above a scope apply below it, and refusals
that name the scope, the limit and the excess."""

from __future__ import annotations

import pytest

from aicloud.platform import audit, policy
from aicloud.shared.db import Database
from aicloud.shared.errors import ValidationFailed

ADMIN = audit.Actor(id="user_admin")


def test_set_change_check_clear(db: Database) -> None:
    usage = {("/org_a", "gpu:H100"): 6, ("/org_a/dep_b", "gpu:H100"): 2}
    with db.transaction() as s:
        policy.set_quota(s, actor=ADMIN, scope_path="/org_a", resource_key="gpu:H100", limit=8)
        policy.set_quota(s, actor=ADMIN, scope_path="/org_a/dep_b", resource_key="gpu:H100",
                         limit=4)
        changed = policy.set_quota(s, actor=ADMIN, scope_path="/org_a/dep_b",
                                   resource_key="gpu:H100", limit=3)
        assert changed.limit == 3
        assert [q.scope_path for q in policy.list_quotas(s, "/org_a/dep_b/prj_c")] == [
            "/org_a", "/org_a/dep_b"]
        violations = policy.check_quotas(s, "/org_a/dep_b/prj_c", {"gpu:H100": 3},
                                         lambda scope, key: usage[(scope, key)])
        assert [v.message() for v in violations] == [
            "quota gpu:H100 at /org_a: limit 8, 6 in use, 3 requested, exceeds by 1",
            "quota gpu:H100 at /org_a/dep_b: limit 3, 2 in use, 3 requested, exceeds by 2"]
        assert policy.check_quotas(s, "/org_a/dep_b/prj_c", {"gpu:A100": 50},
                                   lambda scope, key: 0) == []
        with pytest.raises(policy.QuotaExceeded, match="exceeds by 1"):
            policy.enforce_quotas(s, "/org_a/dep_b/prj_c", {"gpu:H100": 2},
                                  lambda scope, key: usage[(scope, key)])
        assert policy.clear_quota(s, actor=ADMIN, scope_path="/org_a",
                                  resource_key="gpu:H100")
        assert not policy.clear_quota(s, actor=ADMIN, scope_path="/org_a",
                                      resource_key="gpu:H100")
    with db.transaction() as s:  # audit events are chained at commit
        events = audit.list_events(s, allowed_scopes=None,
                                   filter=audit.EventFilter(action="policy.quota.*")).items
    assert sorted(e.action for e in events) == ["policy.quota.clear"] + ["policy.quota.set"] * 3


def test_bad_quota_input(db: Database) -> None:
    with db.transaction() as s:
        with pytest.raises(ValidationFailed, match="resource key"):
            policy.set_quota(s, actor=ADMIN, scope_path="/org_a", resource_key="GPU H100",
                             limit=1)
        with pytest.raises(ValidationFailed, match="whole number"):
            policy.set_quota(s, actor=ADMIN, scope_path="/org_a", resource_key="gpu", limit=-1)
        with pytest.raises(ValidationFailed, match="scope"):
            policy.set_quota(s, actor=ADMIN, scope_path="/", resource_key="gpu", limit=1)


def test_two_first_sets_of_one_limit_at_once_do_not_collide(db: Database) -> None:
    """Both transactions find no row; without the org tree lock both insert and the second
    fails on the unique key (a 500). With it the second waits and changes the first's row."""
    import threading
    import time

    errors: list[Exception] = []
    s1 = db.session()
    with s1.begin():
        policy.set_quota(s1, actor=ADMIN, scope_path="/org_r/prj_x", resource_key="gpu",
                         limit=4)

        def second() -> None:
            try:
                with db.transaction() as s2:
                    policy.set_quota(s2, actor=ADMIN, scope_path="/org_r/prj_x",
                                     resource_key="gpu", limit=6)
            except Exception as e:  # the failure is the assertion
                errors.append(e)
        t = threading.Thread(target=second, daemon=True)
        t.start()
        time.sleep(0.3)
    s1.close()
    t.join(15)
    assert errors == []
    with db.transaction() as s:
        assert [(q.resource_key, q.limit) for q in policy.list_quotas(s, "/org_r/prj_x")] == [
            ("gpu", 6)]
