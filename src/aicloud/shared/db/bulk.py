"""Set-based writes: one executemany per statement, with parameters prepared once.

SQLAlchemy prepares each row's parameters through the generic compiled-statement path, which
costs more than SQLite itself spends writing the row. Here the statement is compiled once and
each column's bind processor is applied directly, then the DBAPI executemany runs it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import Connection, Table, bindparam, update
from sqlalchemy.sql.elements import ClauseElement


def _executemany(conn: Connection, stmt: ClauseElement, rows: Sequence[Mapping[str, Any]],
                 constant: Mapping[str, Any] | None = None) -> None:
    dialect = conn.dialect
    compiled = stmt.compile(dialect=dialect, column_keys=list(rows[0]))
    static = compiled.construct_params(dict(rows[0]))
    procs = {name: bp.type._cached_bind_processor(dialect)
             for name, bp in compiled.binds.items()}
    order = compiled.positiontup if compiled.positional else None
    if order is None:
        # Named paramstyles (psycopg): let SQLAlchemy do it; its batching is efficient there.
        conn.execute(stmt, [dict(r) for r in rows])
        return
    static_values = {n: (procs[n](v) if procs.get(n) else v) for n, v in static.items()
                     if n not in rows[0]}
    columns = []
    for n in order:
        if n not in rows[0]:
            columns.append([static_values[n]] * len(rows))
            continue
        raw = [r[n] for r in rows]
        p = procs.get(n)
        if p is not None:
            # Processed columns are dates and booleans: few distinct values per batch.
            memo: dict[Any, Any] = {}
            raw = [memo[v] if v in memo else memo.setdefault(v, p(v)) for v in raw]
        columns.append(raw)
    params = list(zip(*columns, strict=True))
    conn.exec_driver_sql(str(compiled), params)


def insert_rows(conn: Connection, table: Table, rows: Sequence[Mapping[str, Any]]) -> None:
    """INSERT every row (all with the same keys) with one executemany."""
    if rows:
        _executemany(conn, table.insert(), rows)


def update_rows(conn: Connection, table: Table, key: str,
                rows: Sequence[Mapping[str, Any]], **constant: Any) -> None:
    """UPDATE the rows matched on ``key`` with their own values (and ``constant`` ones)."""
    if not rows:
        return
    names = list(rows[0])
    stmt = update(table).where(table.c[key] == bindparam(f"k_{key}")).values(
        **{n: bindparam(f"k_{n}") for n in names if n != key}, **constant)
    _executemany(conn, stmt, [{f"k_{n}": r[n] for n in names} for r in rows])
