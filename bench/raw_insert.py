"""The plain ways of storing rows that benchmarks compare our write paths with.

Written here with the drivers' and SQLAlchemy's public calls, independently of
``aicloud.shared.db.bulk``, so a change to our writer never moves its baseline.

``best_insert`` times every plain INSERT form and keeps the fastest, so the baseline is never a
weak form picked by accident:

- ``executemany``: the driver's own (psycopg 3 pipelines it; sqlite3 reuses one prepared
  statement);
- ``insertmanyvalues``: SQLAlchemy 2's ``conn.execute(table.insert(), rows)``, which batches
  rows into multi-row VALUES on PostgreSQL;
- ``unnest`` (PostgreSQL): one ``INSERT ... SELECT FROM unnest(...)`` over one typed array per
  column, passed in binary.

``copy`` (PostgreSQL) is ``COPY ... FROM STDIN (FORMAT BINARY)``: not an INSERT, the fastest
way PostgreSQL takes rows at all, reported beside the INSERT baseline.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import sqlalchemy as sa

from aicloud.shared.db import Database

Rows = Sequence[Mapping[str, Any]]


def _names(table: sa.Table, rows: Rows) -> list[str]:
    return list(rows[0])


def executemany(conn: sa.Connection, table: sa.Table, rows: Rows) -> None:
    names = _names(table, rows)
    mark = "%s" if conn.dialect.name == "postgresql" else "?"
    sql = (f"INSERT INTO {table.name} ({', '.join(names)}) "
           f"VALUES ({', '.join([mark] * len(names))})")
    # Values as the driver takes them (SQLite: dates as SQLAlchemy's text).
    convert = [table.c[n].type.bind_processor(conn.dialect) or (lambda v: v) for n in names]
    cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
    cursor.executemany(sql, [tuple(f(r[n]) for f, n in zip(convert, names, strict=True))
                             for r in rows])
    cursor.close()


def insertmanyvalues(conn: sa.Connection, table: sa.Table, rows: Rows) -> None:
    conn.execute(table.insert(), list(rows))


def unnest(conn: sa.Connection, table: sa.Table, rows: Rows) -> None:
    names = _names(table, rows)
    types = [table.c[n].type.compile(dialect=conn.dialect) for n in names]
    arrays = ", ".join(f"CAST(%b AS {t}[])" for t in types)
    cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
    cursor.execute(f"INSERT INTO {table.name} ({', '.join(names)}) SELECT * FROM unnest({arrays})",
                   [[r[n] for r in rows] for n in names])
    cursor.close()


def copy(conn: sa.Connection, table: sa.Table, rows: Rows) -> None:
    names = _names(table, rows)
    types = [re.sub(r"\(.*\)", "", table.c[n].type.compile(dialect=conn.dialect)).lower()
             for n in names]
    cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
    with cursor.copy(f"COPY {table.name} ({', '.join(names)}) FROM STDIN (FORMAT BINARY)") as cp:
        cp.set_types(types)
        for r in rows:
            cp.write_row(tuple(r[n] for n in names))
    cursor.close()


INSERT_FORMS: dict[str, dict[str, Callable[[sa.Connection, sa.Table, Rows], None]]] = {
    "sqlite": {"executemany": executemany, "insertmanyvalues": insertmanyvalues},
    "postgresql": {"executemany": executemany, "insertmanyvalues": insertmanyvalues,
                   "unnest": unnest},
}


def rate(db: Database, table: sa.Table, rows: Rows, batch: int,
         write: Callable[[sa.Connection, sa.Table, Rows], None]) -> tuple[float, float]:
    """(rows per wall-clock second, rows per CPU second of this process): ``rows`` written
    ``batch`` at a time, one transaction each."""
    t0, c0 = time.perf_counter(), time.process_time()
    for i in range(0, len(rows), batch):
        with db.engine.begin() as conn:
            write(conn, table, rows[i:i + batch])
    return len(rows) / (time.perf_counter() - t0), len(rows) / (time.process_time() - c0)


def best_insert(db: Database, table: sa.Table, make_rows: Callable[[str], Rows],
                batch: int) -> tuple[str, float, float]:
    """The fastest plain INSERT form: (its name, rows per wall-clock second, rows per CPU
    second). ``make_rows(tag)`` builds the rows (fresh keys per form), before the clock."""
    best = ("", 0.0, 0.0)
    for name, write in INSERT_FORMS[db.engine.dialect.name].items():
        wall, cpu = rate(db, table, make_rows(name), batch, write)
        if wall > best[1]:
            best = (name, wall, cpu)
    return best
