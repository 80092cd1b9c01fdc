from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from functools import partial

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


INT64_MAX = 2**63 - 1


def _edge_table(db: Database) -> sa.Table:
    meta = sa.MetaData()
    t = sa.Table("bulk_edges", meta, sa.Column("seq", sa.Integer, primary_key=True),
                 sa.Column("k", sa.String(40), unique=True), sa.Column("n", sa.BigInteger),
                 sa.Column("small", sa.Integer), sa.Column("flag", sa.Boolean, nullable=True),
                 sa.Column("at", UTCDateTime, nullable=True),
                 sa.Column("note", sa.Text, nullable=True),
                 sa.Column("tag", sa.String(8), nullable=True))
    meta.drop_all(db.engine)
    meta.create_all(db.engine)
    return t


# Values a text format has to escape, and the extremes of each type.
EDGE_NOTES = ["plain", "tab\there", "new\nline", "back\\slash", 'quote " and \' comma,',
              "{braces}", "NULL", "", "ünïcødé €", "emoji 🧾", "日本語", "\\N", "\r\x01"]


def _edge_rows(n: int) -> list[dict[str, object]]:
    return [{"k": f"k{i}", "n": (INT64_MAX, -INT64_MAX - 1, 0)[i % 3] if i < 3 else i,
             "small": 2**31 - 1 if i == 1 else i,
             "flag": (True, False, None)[i % 3],
             "at": None if i % 4 == 0 else T + timedelta(microseconds=i),
             "note": EDGE_NOTES[i % len(EDGE_NOTES)] if i % 5 else None} for i in range(n)]


def test_insert_and_update_keep_edge_values_exactly(db: Database) -> None:
    """Binary COPY and typed arrays on PostgreSQL, executemany on SQLite: every value comes
    back as it went in (int64 extremes, unicode, characters a text format escapes, NULLs)."""
    t = _edge_table(db)
    rows = _edge_rows(40)
    with db.engine.begin() as c:
        assert bulk.insert_rows(c, t, rows) == 40
        # Every value of a column NULL: there is no element to infer an array type from.
        assert bulk.insert_columns(c, t, {"k": ["none1", "none2"], "n": [1, 2],
                                          "small": [1, 2], "flag": [None, None],
                                          "at": [None, None], "note": [None, None]}) == 2
        got = {r.k: r._asdict() for r in c.execute(sa.select(t))}
    for row in rows:
        assert {k: got[row["k"]][k] for k in row} == row
    assert got["none1"]["note"] is None and got["none2"]["at"] is None
    with db.engine.begin() as c:
        bulk.update_columns(c, t, "k", {"k": ["k0", "k1", "k2", "k3"],
                                        "note": ["é\t€", None, "🧾", "x"],
                                        "n": [-INT64_MAX - 1, INT64_MAX, 7, 8]},
                            flag=None, at=T)
        bulk.update_rows(c, t, "k", [{"k": "k4", "note": None}])
        got = {r.k: r for r in c.execute(sa.select(t))}
    assert [got[k].note for k in ("k0", "k1", "k2", "k3", "k4")] == ["é\t€", None, "🧾", "x",
                                                                      None]
    assert got["k0"].n == -INT64_MAX - 1 and got["k1"].n == INT64_MAX
    assert {got[k].flag for k in ("k0", "k1", "k2", "k3")} == {None}
    assert got["k3"].at == T and got["k5"].at == T + timedelta(microseconds=5)
    with db.engine.begin() as c:
        t.drop(c)


def test_duplicate_keys_in_one_batch_fail_as_an_integrity_error(db: Database) -> None:
    """A key twice in one insert (or already stored) is SQLAlchemy's IntegrityError on both
    databases, whatever way the rows went in; the transaction can go on after a savepoint."""
    t = _edge_table(db)
    rows = _edge_rows(3)
    with db.engine.begin() as c:
        bulk.insert_rows(c, t, rows)
        for batch in ([*_edge_rows(6)[3:], {**rows[0], "k": "k4"}], [rows[1]]):
            with pytest.raises(sa.exc.IntegrityError), c.begin_nested():
                bulk.insert_rows(c, t, batch)
        # Skipping conflicts skips duplicates within the batch as well as stored ones.
        assert bulk.insert_rows(c, t, [rows[2], {**rows[2], "k": "new"},
                                       {**rows[2], "k": "new"}], skip_conflicts_on="k") == 1
        assert c.scalar(sa.select(sa.func.count()).select_from(t)) == 4
    with db.engine.begin() as c:
        t.drop(c)


def test_values_are_checked_by_their_column_type(db: Database) -> None:
    """A naive datetime is refused by UTCDateTime; a value out of its column's range is an
    error from SQLAlchemy's family (DataError), not a bare driver exception."""
    t = _edge_table(db)
    with db.engine.begin() as c, pytest.raises(ValueError, match="naive"):
        bulk.insert_rows(c, t, [{**_edge_rows(1)[0], "at": datetime(2026, 1, 1)}])
    if db.engine.dialect.name == "postgresql":
        for bad, error in (({"small": 2**31}, sa.exc.DataError),
                           ({"small": -2**31 - 1}, sa.exc.DataError),
                           ({"n": 2**63}, sa.exc.DataError),
                           ({"k": "x" * 41}, sa.exc.DataError),
                           ({"note": "nul \x00"}, sa.exc.DataError)):
            for write in (bulk.insert_rows, partial(bulk.insert_rows, skip_conflicts_on="k")):
                with db.engine.begin() as c, pytest.raises(error):
                    write(c, t, [{**_edge_rows(1)[0], **bad}])
        with db.engine.begin() as c:
            assert c.scalar(sa.select(sa.func.count()).select_from(t)) == 0
            bulk.insert_rows(c, t, _edge_rows(1))
        for change in ({"tag": ["x" * 9]}, {"small": [2**31]}):
            with db.engine.begin() as c, pytest.raises(sa.exc.DataError):
                bulk.update_columns(c, t, "k", {"k": ["k0"], **change})
        with db.engine.begin() as c, pytest.raises(sa.exc.DataError):
            bulk.update_columns(c, t, "k", {"k": ["k0"], "n": [1]}, tag="x" * 9)
        with db.engine.begin() as c:
            assert c.execute(sa.select(t.c.tag, t.c.small)).one() == (None, 0)
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


def test_in_values_matches_exactly_whatever_the_list(db: Database) -> None:
    """One array parameter on PostgreSQL, an expanding list elsewhere: the same rows either
    way, for an empty list, integers, and a value longer than the column (not truncated into
    a match)."""
    t = _edge_table(db)
    rows = _edge_rows(6)
    with db.engine.begin() as c:
        bulk.insert_rows(c, t, [{**rows[0], "k": "x" * 40}, *rows[1:]])
        by_key = sa.select(t.c.seq).where(bulk.in_values(t.c.k, "ks")).order_by(t.c.seq)
        assert c.scalars(by_key, {"ks": []}).all() == []
        assert len(c.scalars(by_key, {"ks": ["k1", "k2", "k2", "ünïcødé"]}).all()) == 2
        assert c.scalars(by_key, {"ks": ["x" * 41]}).all() == []
        assert len(c.scalars(by_key, {"ks": ["x" * 40]}).all()) == 1
        by_small = sa.select(t.c.k).where(bulk.in_values(t.c.small, "ns")).order_by(t.c.k)
        assert c.scalars(by_small, {"ns": [3, 4, 99]}).all() == ["k3", "k4"]
    with db.engine.begin() as c:
        t.drop(c)
