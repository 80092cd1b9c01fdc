from __future__ import annotations

from datetime import UTC, datetime

import pytest
import sqlalchemy as sa

from aicloud.platform.iam.models import UserModel
from aicloud.shared.clock import FakeClock
from aicloud.shared.db import Database
from aicloud.shared.errors import ValidationFailed
from aicloud.shared.ids import id_prefix, is_id, new_id
from aicloud.shared.pagination import decode_cursor, encode_cursor, paginate


def test_ids_are_prefixed_and_sortable() -> None:
    ids = [new_id("org") for _ in range(200)]
    assert all(is_id(i, "org") for i in ids)
    assert ids == sorted(ids)  # ULIDs are monotonic within a process
    assert id_prefix("org_nope") is None
    with pytest.raises(ValueError):
        new_id("Org")


def test_cursor_round_trip_and_garbage() -> None:
    assert decode_cursor(encode_cursor("user_01ABC")) == "user_01ABC"
    for bad in ("%%%", "bm90IGpzb24", encode_cursor("x")[:-3]):
        with pytest.raises(ValidationFailed):
            decode_cursor(bad)


def test_fake_clock_moves_only_when_told() -> None:
    clock = FakeClock(datetime(2026, 5, 1, tzinfo=UTC))
    assert clock.now() == clock.now()
    assert (clock.advance(90) - datetime(2026, 5, 1, tzinfo=UTC)).total_seconds() == 90


def test_paginate_walks_every_row_once(db: Database) -> None:
    now = datetime.now(UTC)
    with db.transaction() as s:
        for i in range(23):
            s.add(UserModel(id=new_id("user"), email=f"u{i}@x.io", display_name=f"u{i}",
                            disabled=False, created_at=now, updated_at=now))
    seen: list[str] = []
    cursor = None
    with db.transaction() as s:
        while True:
            rows, cursor = paginate(s, sa.select(UserModel), UserModel.id, limit=5, cursor=cursor)
            seen.extend(r.id for r in rows)
            if cursor is None:
                break
    assert len(seen) == 23 and seen == sorted(set(seen))


def test_utc_datetimes_come_back_aware(db: Database) -> None:
    when = datetime(2026, 3, 1, 12, 30, tzinfo=UTC)
    with db.transaction() as s:
        s.add(UserModel(id="user_x", email="a@b.c", display_name="a", disabled=False,
                        created_at=when, updated_at=when))
    with db.transaction() as s:
        got = s.get(UserModel, "user_x")
        assert got is not None and got.created_at == when and got.created_at.tzinfo is not None


def test_naive_datetimes_are_refused(sqlite_db: Database) -> None:
    with pytest.raises(sa.exc.StatementError, match="naive datetime"), \
            sqlite_db.transaction() as s:
        s.add(UserModel(id="user_y", email="y@b.c", display_name="y", disabled=False,
                        created_at=datetime(2026, 1, 1), updated_at=datetime(2026, 1, 1)))
        s.flush()
