"""Set-based writes of many rows at once.

- SQLite: one executemany. SQLAlchemy would prepare each row's parameters through its
  generic compiled-statement path, which costs more than SQLite spends writing the row; here
  the statement is compiled once and each column's bind processor applied directly.
- PostgreSQL: one statement per call, the rows passed as one array per column and expanded
  with ``unnest`` (``INSERT ... SELECT FROM unnest(...)``, ``UPDATE ... FROM unnest(...)``),
  instead of one statement per row.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from sqlalchemy import Connection, Table, bindparam, update
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.sql import ColumnElement
from sqlalchemy.sql.compiler import Compiled
from sqlalchemy.sql.elements import ClauseElement

Columns = Mapping[str, Sequence[Any]]


def _columns(rows: Sequence[Mapping[str, Any]]) -> dict[str, list[Any]]:
    return {n: [r[n] for r in rows] for n in rows[0]}


def _processed(conn: Connection, type_: Any, values: Sequence[Any]) -> Sequence[Any]:
    """Values as the driver takes them. Processed columns are dates and booleans: few
    distinct values per batch, so each distinct value is converted once."""
    p = type_._cached_bind_processor(conn.dialect)
    if p is None:
        return values
    memo: dict[Any, Any] = {}
    return [memo[v] if v in memo else memo.setdefault(v, p(v)) for v in values]


# Compiled statements by (dialect, table, operation, column names). Every value is bound
# from the columns, none is embedded in the statement, so a compiled form is reusable; the
# hot writers call these with the same shapes over and over, and compiling costs more than
# SQLite spends on a small batch.
_COMPILED: dict[tuple[Any, ...], Compiled] = {}


def _executemany(conn: Connection, shape: tuple[Any, ...], make: Callable[[], ClauseElement],
                 columns: Columns) -> int:
    """Execute ``make()`` (a statement of the given ``shape``) for every row; the number of
    rows changed (sqlite3 sums executemany's)."""
    dialect = conn.dialect
    names = list(columns)
    key = (dialect.name, *shape, tuple(names))
    compiled = _COMPILED.get(key)
    if compiled is None:
        compiled = _COMPILED[key] = make().compile(dialect=dialect, column_keys=names)
    order = compiled.positiontup if compiled.positional else None
    if order is None:
        # Named paramstyles (psycopg): let SQLAlchemy do it; its batching is efficient there.
        rows = [dict(zip(names, values, strict=True))
                for values in zip(*columns.values(), strict=True)]
        return int(conn.execute(make(), rows).rowcount)
    n = len(columns[names[0]])
    static = compiled.construct_params({name: columns[name][0] for name in names})
    ordered = []
    for name in order:
        bind_type = compiled.binds[name].type
        values = columns[name] if name in columns else [static[name]] * n
        ordered.append(_processed(conn, bind_type, values))
    return int(conn.exec_driver_sql(str(compiled), list(zip(*ordered, strict=True))).rowcount)


def _unnest(conn: Connection, table: Table,
            columns: Columns) -> tuple[str, dict[str, Sequence[Any]]]:
    """``unnest(CAST(:a AS type[]), ...)`` over one array per column, and its parameters."""
    names = list(columns)
    params = {f"a{i}": _processed(conn, table.c[n].type, columns[n])
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
    return insert_columns(conn, table, _columns(rows), skip_conflicts_on=skip_conflicts_on)


def insert_columns(conn: Connection, table: Table, columns: Columns, *,
                   skip_conflicts_on: str | None = None) -> int:
    """insert_rows for rows given column by column (name -> one value per row): what
    callers that already hold their data as columns pass, without building a dict per row."""
    if not columns or not len(next(iter(columns.values()))):
        return 0
    if conn.dialect.name != "postgresql":
        if skip_conflicts_on:
            return _executemany(
                conn, (table, "insert-skip", skip_conflicts_on),
                lambda: sqlite_insert(table).on_conflict_do_nothing(
                    index_elements=[skip_conflicts_on]), columns)
        _executemany(conn, (table, "insert"), table.insert, columns)
        return len(next(iter(columns.values())))
    source, params = _unnest(conn, table, columns)
    cols = ", ".join(f'"{n}"' for n in columns)
    skip = f' ON CONFLICT ("{skip_conflicts_on}") DO NOTHING' if skip_conflicts_on else ""
    result = conn.exec_driver_sql(
        f'INSERT INTO "{table.name}" ({cols}) SELECT * FROM {source}{skip}', params)
    return int(result.rowcount)


def update_rows(conn: Connection, table: Table, key: str,
                rows: Sequence[Mapping[str, Any]], **constant: Any) -> None:
    """UPDATE the rows matched on ``key`` with their own values (and ``constant`` ones)."""
    if rows:
        update_columns(conn, table, key, _columns(rows), **constant)


def update_columns(conn: Connection, table: Table, key: str, columns: Columns,
                   **constant: Any) -> None:
    """update_rows for rows given column by column (name -> one value per row)."""
    names = list(columns)
    n = len(columns[key])
    if not n:
        return
    if conn.dialect.name == "postgresql":
        source, params = _unnest(conn, table, columns)
        sets = [f'"{c}" = v."{c}"' for c in names if c != key]
        for i, (c, v) in enumerate(constant.items()):
            params[f"c{i}"] = _processed(conn, table.c[c].type, [v])[0]
            sets.append(f'"{c}" = %(c{i})s')
        cols = ", ".join(f'"{c}"' for c in names)
        conn.exec_driver_sql(
            f'UPDATE "{table.name}" SET {", ".join(sets)} FROM {source} AS v ({cols}) '
            f'WHERE "{table.name}"."{key}" = v."{key}"', params)
        return
    bound = {f"k_{c}": values for c, values in columns.items()}
    bound.update({f"c_{c}": [v] * n for c, v in constant.items()})
    _executemany(
        conn, (table, "update", key, tuple(constant)),
        lambda: update(table).where(table.c[key] == bindparam(f"k_{key}")).values(
            **{c: bindparam(f"k_{c}") for c in names if c != key},
            **{c: bindparam(f"c_{c}") for c in constant}), bound)


def in_values(column: ColumnElement[Any], name: str) -> ColumnElement[bool]:
    """``column IN (...)`` for a list bound under ``name`` at execution time.

    An expanding IN list, not ``= ANY(:array)``: PostgreSQL plans the array form without
    knowing its size and, on a young table, picks a sequential scan that grows with it.
    """
    return column.in_(bindparam(name, expanding=True))
