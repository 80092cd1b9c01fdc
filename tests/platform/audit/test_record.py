"""Audit events are written with the change, in one transaction, and chained by the sealer."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from aicloud.platform import audit, iam
from aicloud.platform.audit.chain import GENESIS_HASH, event_hash
from aicloud.platform.audit.models import AuditEventModel
from aicloud.platform.audit.service import event_fields
from aicloud.shared.db import Database

ADMIN = audit.Actor(id="user_admin", kind="user", ip="10.0.0.1", request_id="req_1")


def _events(db: Database) -> list[AuditEventModel]:
    audit.seal_pending(db)
    with db.transaction() as s:
        return list(s.scalars(select(AuditEventModel).order_by(AuditEventModel.seq)))


def test_events_are_chained_in_commit_order(db: Database) -> None:
    for i in range(3):
        with db.transaction() as s:
            audit.record(s, actor=ADMIN, action="test.thing.create", target_type="thing",
                         target_id=f"t{i}", scope_path="/org_a",
                         changes=audit.diff(None, {"name": f"n{i}"}))
            audit.record(s, actor=ADMIN, action="test.thing.update", target_type="thing",
                         target_id=f"t{i}", scope_path="/org_a")
    events = _events(db)
    assert [e.seq for e in events] == list(range(1, 7))
    prev = GENESIS_HASH
    for e in events:
        assert e.prev_hash == prev
        assert e.hash == event_hash(prev, event_fields(e))
        prev = e.hash


def test_a_rolled_back_change_leaves_no_event(db: Database) -> None:
    with pytest.raises(RuntimeError), db.transaction() as s:
        iam.create_user(s, email="x@y.io")
        audit.record(s, actor=ADMIN, action="iam.user.create", target_type="user",
                     target_id="u1")
        raise RuntimeError("boom")
    assert _events(db) == []


def test_events_of_a_rolled_back_savepoint_are_dropped(db: Database) -> None:
    with db.transaction() as s:
        audit.record(s, actor=ADMIN, action="kept", target_type="t", target_id="1")
        try:
            with s.begin_nested():
                audit.record(s, actor=ADMIN, action="dropped", target_type="t", target_id="2")
                raise ValueError
        except ValueError:
            pass
        with s.begin_nested():
            audit.record(s, actor=ADMIN, action="kept-too", target_type="t", target_id="3")
    assert [e.action for e in _events(db)] == ["kept", "kept-too"]


def test_diff_masks_secrets_and_skips_unchanged() -> None:
    changes = audit.diff({"name": "a", "password_hash": "x", "same": 1},
                         {"name": "b", "password_hash": "y", "same": 1},
                         secret_fields=["password_hash"])
    assert changes == {"name": {"old": "a", "new": "b"},
                       "password_hash": {"old": "********", "new": "********"}}


def test_bad_events_are_refused(db: Database) -> None:
    with db.transaction() as s:
        with pytest.raises(ValueError):
            audit.record(s, actor=ADMIN, action="x", target_type="t", target_id="1",
                         outcome="maybe")
        with pytest.raises(ValueError):
            audit.record(s, actor=ADMIN, action="x", target_type="t", target_id="1",
                         scope_path="org")
