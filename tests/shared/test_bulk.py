from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
import sqlalchemy as sa
from sqlalchemy.dialects import sqlite

from aicloud.shared.db import Database, UTCDateTime, bulk

T = datetime(2026, 3, 1, 12, tzinfo=UTC)


def _table(db: Database) -> sa.Table:
    meta = sa.MetaData()
    t = sa.Table("bulk_probe", meta, sa.Column("k", sa.String(20), primary_key=True),
                 sa.Column("n", sa.BigInteger), sa.Column("flag", sa.Boolean),
                 sa.Column("at", UTCDateTime), sa.Column("note", sa.String(20), nullable=True))
    meta.drop_all(db.engine)
    meta.create_all(db.engine)
    return t


def test_insert_and_update_rows_round_trip_types(db: Database) -> None:
    t = _table(db)
    rows = [{"k": f"k{i}", "n": 10**15 + i, "flag": i % 2 == 0, "at": T + timedelta(seconds=i),
             "note": None if i % 3 else f"n{i}"} for i in range(50)]
    with db.engine.begin() as c:
        assert bulk.insert_rows(c, t, rows) == 50
        bulk.update_rows(c, t, "k", [{"k": "k1", "n": -1}, {"k": "k2", "n": -2}],
                         flag=True, at=T)
        got = {r.k: r for r in c.execute(sa.select(t)).all()}
    assert got["k1"].n == -1 and got["k2"].n == -2 and got["k3"].n == 10**15 + 3
    assert got["k1"].flag is True and got["k3"].flag is False
    assert got["k1"].at == T and got["k4"].at == T + timedelta(seconds=4)
    assert got["k0"].note == "n0" and got["k1"].note is None
    with db.engine.begin() as c:
        assert bulk.insert_rows(c, t, [*rows[:2], {**rows[0], "k": "new"}],
                                skip_conflicts_on="k") == 1
        assert c.scalar(sa.select(sa.func.count()).select_from(t).where(
            bulk.in_values(t.c.k, "ks")), {"ks": ["k1", "k2", "zz"]}) == 2
    with db.engine.begin() as c:
        t.drop(c)


def test_utc_datetime_sqlite_text_is_sqlalchemys_own_format() -> None:
    """UTCDateTime's fused SQLite conversion writes and reads what DATETIME itself would."""
    dialect = sqlite.dialect()
    ours_in = UTCDateTime().bind_processor(dialect)
    ours_out = UTCDateTime().result_processor(dialect, None)
    plain_in = sqlite.DATETIME().bind_processor(dialect)
    plain_out = sqlite.DATETIME().result_processor(dialect, None)
    for value in (datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 11, 23, 15, 4, 5, 123, UTC),
                  datetime(1999, 12, 31, 23, 59, 59, 999999, UTC),
                  datetime(2026, 6, 1, 2, 0, tzinfo=timezone(timedelta(hours=2)))):
        text = ours_in(value)
        assert text == plain_in(value.astimezone(UTC).replace(tzinfo=None))
        assert ours_out(text) == value == plain_out(text).replace(tzinfo=UTC)
    assert ours_out("2026-01-01 00:00:00") == datetime(2026, 1, 1, tzinfo=UTC)
    assert ours_in(None) is None and ours_out(None) is None
    with pytest.raises(ValueError, match="naive"):
        ours_in(datetime(2026, 1, 1))
