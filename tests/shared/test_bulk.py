from __future__ import annotations

from datetime import UTC, datetime, timedelta

import sqlalchemy as sa

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
