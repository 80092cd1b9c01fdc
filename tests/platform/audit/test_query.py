"""Reading the log: filters, scope confinement, pagination and the JSON Lines export."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from aicloud.platform import audit
from aicloud.platform.audit.chain import canonical_json, event_hash
from aicloud.shared.db import Database
from aicloud.shared.errors import ValidationFailed

T0 = datetime(2026, 3, 1, tzinfo=UTC)
ALICE = audit.Actor(id="user_alice")
BOB = audit.Actor(id="user_bob")


@pytest.fixture
def events(db: Database) -> Database:
    rows = [  # (actor, action, scope, minutes after T0)
        (ALICE, "iam.user.create", "/org_a", 0),
        (ALICE, "iam.user.update", "/org_a/dep_x", 1),
        (BOB, "gpuaas.instance.create", "/org_a/dep_x/prj_1", 2),
        (BOB, "iam.role.bind", "/org_ab", 3),  # a sibling whose name extends org_a
        (ALICE, "gpuaas.instance.delete", "/org_b/prj_2", 4),
        (audit.Actor.system("gc"), "iam_user.purge", "/", 5),  # '_' must not act as wildcard
    ]
    with db.transaction() as s:
        for actor, action, scope, minutes in rows:
            audit.record(s, actor=actor, action=action, target_type="t", target_id=action,
                         scope_path=scope, occurred_at=T0 + timedelta(minutes=minutes),
                         changes=audit.diff({"n": 1}, {"n": 2}))
    audit.seal_pending(db)
    return db


def _actions(db: Database, allowed: list[str] | None = None, **flt: object) -> list[str]:
    with db.transaction() as s:
        page = audit.list_events(s, allowed_scopes=allowed, filter=audit.EventFilter(**flt),
                                 order="asc")
    return [e.action for e in page.items]


def test_scope_prefixes_confine_what_a_reader_sees(events: Database) -> None:
    assert _actions(events, ["/org_a"]) == [
        "iam.user.create", "iam.user.update", "gpuaas.instance.create"]
    assert _actions(events, ["/org_a/dep_x", "/org_b"]) == [
        "iam.user.update", "gpuaas.instance.create", "gpuaas.instance.delete"]
    assert _actions(events, []) == []
    assert len(_actions(events, None)) == len(_actions(events, ["/"])) == 6
    # A requested scope narrows within what is allowed, never widens it.
    assert _actions(events, ["/org_a/dep_x"], scope="/") == [
        "iam.user.update", "gpuaas.instance.create"]
    assert _actions(events, ["/org_a"], scope="/org_b") == []


def test_filters_by_actor_action_and_time(events: Database) -> None:
    assert _actions(events, actor_id="user_bob") == ["gpuaas.instance.create", "iam.role.bind"]
    assert _actions(events, action="iam.user.update") == ["iam.user.update"]
    assert _actions(events, action="iam.user.*") == ["iam.user.create", "iam.user.update"]
    assert _actions(events, action="iam_*") == ["iam_user.purge"]
    assert _actions(events, since=T0 + timedelta(minutes=2),
                    until=T0 + timedelta(minutes=4)) == [
        "gpuaas.instance.create", "iam.role.bind"]


def test_bad_filters_are_refused() -> None:
    with pytest.raises(ValidationFailed):
        audit.EventFilter(scope="org_a")
    with pytest.raises(ValidationFailed):
        audit.EventFilter(since=datetime(2026, 1, 1))
    with pytest.raises(ValidationFailed):
        audit.EventFilter(since=T0, until=T0)


@pytest.mark.parametrize("order", ["asc", "desc"])
def test_cursor_pagination_walks_every_event_once(events: Database, order: str) -> None:
    seen: list[int] = []
    cursor = None
    with events.transaction() as s:
        while True:
            page = audit.list_events(s, allowed_scopes=None, limit=4, cursor=cursor,
                                     order=order)  # type: ignore[arg-type]
            seen += [e.seq for e in page.items]
            if not page.next_cursor:
                break
            cursor = page.next_cursor
    assert seen == sorted(seen, reverse=order == "desc") and sorted(seen) == list(range(1, 7))
    with events.transaction() as s, pytest.raises(ValidationFailed):
        audit.list_events(s, allowed_scopes=None, cursor="garbage")


def test_export_streams_json_lines_that_rehash(events: Database) -> None:
    lines = list(audit.iter_jsonl(events, allowed_scopes=["/org_a"]))
    assert len(lines) == 3 and all(line.endswith("\n") for line in lines)
    for line in lines:
        e = json.loads(line)
        # A third party recomputes the hash from the exported fields alone.
        fields = {**e, "occurred_at": datetime.fromisoformat(e["occurred_at"]),
                  "changes": canonical_json(e["changes"]), "details": canonical_json(e["details"])}
        assert event_hash(e["prev_hash"], fields) == e["hash"]
    assert json.loads(lines[1])["changes"] == {"n": {"old": 1, "new": 2}}


def test_export_pages_through_more_than_one_batch(db: Database) -> None:
    with db.transaction() as s:
        for i in range(25):
            audit.record(s, actor=ALICE, action="a", target_type="t", target_id=str(i))
    audit.seal_pending(db)
    seqs = [e.seq for e in audit.iter_events(db, allowed_scopes=None, batch_size=10)]
    assert seqs == list(range(1, 26))
