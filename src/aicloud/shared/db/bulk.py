"""Set-based writes of many rows at once.

- SQLite: one executemany. SQLAlchemy would prepare each row's parameters through its
  generic compiled-statement path, which costs more than SQLite spends writing the row; here
  the statement is compiled once and each column's bind processor applied directly.
- PostgreSQL: one statement per call, the rows passed as one array per column and expanded
  with ``unnest`` (``INSERT ... SELECT FROM unnest(...)``, ``UPDATE ... FROM unnest(...)``),
  instead of one statement per row.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import Connection, Table, bindparam, update
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.sql import ColumnElement
from sqlalchemy.sql.elements import ClauseElement


def _executemany(conn: Connection, stmt: ClauseElement, rows: Sequence[Mapping[str, Any]],
                 constant: Mapping[str, Any] | None = None) -> int:
    """Execute for every row; the number of rows changed (sqlite3 sums executemany's)."""
    dialect = conn.dialect
    compiled = stmt.compile(dialect=dialect, column_keys=list(rows[0]))
    static = compiled.construct_params(dict(rows[0]))
    procs = {name: bp.type._cached_bind_processor(dialect)
             for name, bp in compiled.binds.items()}
    order = compiled.positiontup if compiled.positional else None
    if order is None:
        # Named paramstyles (psycopg): let SQLAlchemy do it; its batching is efficient there.
        return int(conn.execute(stmt, [dict(r) for r in rows]).rowcount)
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
    return int(conn.exec_driver_sql(str(compiled), params).rowcount)


def _processed_column(conn: Connection, table: Table, name: str, values: list[Any]) -> list[Any]:
    p = table.c[name].type._cached_bind_processor(conn.dialect)
    if p is None:
        return values
    memo: dict[Any, Any] = {}
    return [memo[v] if v in memo else memo.setdefault(v, p(v)) for v in values]


def _unnest(conn: Connection, table: Table, names: list[str],
            rows: Sequence[Mapping[str, Any]]) -> tuple[str, dict[str, list[Any]]]:
    """``unnest(CAST(:a AS type[]), ...)`` over one array per column, and its parameters."""
    params = {f"a{i}": _processed_column(conn, table, n, [r[n] for r in rows])
              for i, n in enumerate(names)}
    casts = ", ".join(
        f"CAST(%(a{i})s AS {table.c[n].type.compile(dialect=conn.dialect)}[])"
        for i, n in enumerate(names))
    return f"unnest({casts})", params


def insert_rows(conn: Connection, table: Table, rows: Sequence[Mapping[str, Any]], *,
                skip_conflicts_on: str | None = None) -> int:
    """INSERT every row (all with the same keys) in one set-based statement; the number of
    rows inserted. ``skip_conflicts_on`` names a unique column whose duplicates are skipped
    (``ON CONFLICT DO NOTHING``) instead of failing."""
    if not rows:
        return 0
    if conn.dialect.name != "postgresql":
        if skip_conflicts_on:
            stmt = sqlite_insert(table).on_conflict_do_nothing(index_elements=[skip_conflicts_on])
            return _executemany(conn, stmt, rows)
        _executemany(conn, table.insert(), rows)
        return len(rows)
    names = list(rows[0])
    source, params = _unnest(conn, table, names, rows)
    cols = ", ".join(f'"{n}"' for n in names)
    skip = f' ON CONFLICT ("{skip_conflicts_on}") DO NOTHING' if skip_conflicts_on else ""
    result = conn.exec_driver_sql(
        f'INSERT INTO "{table.name}" ({cols}) SELECT * FROM {source}{skip}', params)
    return int(result.rowcount)


def update_rows(conn: Connection, table: Table, key: str,
                rows: Sequence[Mapping[str, Any]], **constant: Any) -> None:
    """UPDATE the rows matched on ``key`` with their own values (and ``constant`` ones)."""
    if not rows:
        return
    names = list(rows[0])
    if conn.dialect.name == "postgresql":
        source, params = _unnest(conn, table, names, rows)
        sets = [f'"{n}" = v."{n}"' for n in names if n != key]
        for i, (n, v) in enumerate(constant.items()):
            params[f"c{i}"] = _processed_column(conn, table, n, [v])[0]
            sets.append(f'"{n}" = %(c{i})s')
        cols = ", ".join(f'"{n}"' for n in names)
        conn.exec_driver_sql(
            f'UPDATE "{table.name}" SET {", ".join(sets)} FROM {source} AS v ({cols}) '
            f'WHERE "{table.name}"."{key}" = v."{key}"', params)
        return
    stmt = update(table).where(table.c[key] == bindparam(f"k_{key}")).values(
        **{n: bindparam(f"k_{n}") for n in names if n != key}, **constant)
    _executemany(conn, stmt, [{f"k_{n}": r[n] for n in names} for r in rows])


def in_values(column: ColumnElement[Any], name: str) -> ColumnElement[bool]:
    """``column IN (...)`` for a list bound under ``name`` at execution time.

    An expanding IN list, not ``= ANY(:array)``: PostgreSQL plans the array form without
    knowing its size and, on a young table, picks a sequential scan that grows with it.
    """
    return column.in_(bindparam(name, expanding=True))
