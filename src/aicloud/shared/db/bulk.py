"""Set-based writes of many rows at once: the one place that chooses how, per database.

- PostgreSQL: an INSERT streams the rows with binary ``COPY ... FROM STDIN`` (psycopg's
  ``cursor.copy()``); an INSERT that skips conflicting keys, and an UPDATE, pass one typed
  array per column in binary and expand them with ``unnest``. Binary throughout: psycopg
  writes a text-format array by quoting each element in Python, which cost more than the
  server spent storing the rows.
- SQLite: one executemany of a statement written here, each column's bind processor applied
  directly: SQLAlchemy's generic per-row parameter handling costs more than SQLite spends
  writing the row.

Values go through each column type's own bind processor (``TypeEngine.bind_processor``), so a
``UTCDateTime`` column refuses a naive datetime here as everywhere else.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import psycopg
from sqlalchemy import Connection, String, Table, bindparam
from sqlalchemy import exc as sa_exc
from sqlalchemy.dialects import postgresql
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql import ColumnElement
from sqlalchemy.sql.expression import BinaryExpression

Columns = Mapping[str, Sequence[Any]]
_Processor = Callable[[Any], Any] | None


def _columns(rows: Sequence[Mapping[str, Any]]) -> dict[str, list[Any]]:
    return {n: [r[n] for r in rows] for n in rows[0]}


def _processed(processor: _Processor, values: Sequence[Any]) -> Sequence[Any]:
    """Values as the driver takes them. A column with one value for every row (a batch's
    time stamps, states) is converted once."""
    if processor is None or not values:
        return values
    if values.count(values[0]) == len(values):
        return [processor(values[0])] * len(values)
    return list(map(processor, values))


class _Plan:
    """What writing one shape of rows (table, operation, column names) needs, worked out
    once: the hot writers call with the same shapes over and over."""

    __slots__ = ("pg_types", "processors", "sql")

    def __init__(self, sql: str, processors: list[_Processor], pg_types: list[str]):
        self.sql, self.processors, self.pg_types = sql, processors, pg_types


_PLANS: dict[tuple[Any, ...], _Plan] = {}


def _plan(conn: Connection, table: Table, op: str, names: Sequence[str],
          build: Callable[[Callable[[str], str], list[str]], str], *extra: Any) -> _Plan:
    dialect = conn.dialect
    key = (dialect.name, table, op, tuple(names), *extra)
    plan = _PLANS.get(key)
    if plan is None:
        types = [table.c[n].type for n in names]
        # Each column's type without its modifier ("VARCHAR(40)" -> "varchar"): what binary
        # COPY needs to pick a value's wire format, and what an array is cast to. Not the
        # full type: an explicit cast to VARCHAR(40) silently truncates a longer string,
        # where storing it in the column is refused.
        pg_types = [re.sub(r"\(.*\)", "", t.compile(dialect=dialect)).strip().lower()
                    for t in types]
        plan = _PLANS[key] = _Plan(build(dialect.identifier_preparer.quote, pg_types),
                                   [t.bind_processor(dialect) for t in types], pg_types)
    return plan


def _driver_error(exc: psycopg.Error, statement: str) -> sa_exc.DBAPIError:
    """A psycopg error raised outside SQLAlchemy as SQLAlchemy would have raised it, so
    callers catch one family of exceptions (IntegrityError for a duplicate key, ...)."""
    for cls in (sa_exc.IntegrityError, sa_exc.DataError, sa_exc.OperationalError,
                sa_exc.ProgrammingError, sa_exc.NotSupportedError, sa_exc.InternalError,
                sa_exc.DatabaseError, sa_exc.InterfaceError):
        if isinstance(exc, getattr(psycopg, cls.__name__)):
            return cls(statement, None, exc)
    return sa_exc.DBAPIError(statement, None, exc)


def _pg_copy(conn: Connection, table: Table, columns: Columns) -> int:
    names = list(columns)

    def build(quote: Callable[[str], str], _: list[str]) -> str:
        return (f"COPY {quote(table.name)} ({', '.join(map(quote, names))}) "
                "FROM STDIN (FORMAT BINARY)")

    plan = _plan(conn, table, "copy", names, build)
    values = [_processed(p, columns[n]) for p, n in zip(plan.processors, names, strict=True)]
    for pg_type, column in zip(plan.pg_types, values, strict=True):
        bound = _NARROW_INTS.get(pg_type)
        if bound is not None:
            present = [v for v in column if v is not None]
            if present and not -bound <= min(present) <= max(present) < bound:
                raise _out_of_range(plan.sql, pg_type)
    cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
    try:
        with cursor.copy(plan.sql) as copy:
            copy.set_types(plan.pg_types)
            for row in zip(*values, strict=True):
                copy.write_row(row)
        return int(cursor.rowcount)
    except psycopg.Error as exc:
        raise _driver_error(exc, plan.sql) from exc
    except OverflowError:  # a Python int beyond BIGINT
        raise _out_of_range(plan.sql, "bigint") from None
    finally:
        cursor.close()


# psycopg's binary dumpers write an int into a 2- or 4-byte column without a range check (it
# would wrap around); an INSERT would be refused by the server, so COPY is refused here.
_NARROW_INTS = {"smallint": 2**15, "integer": 2**31}


def _out_of_range(statement: str, pg_type: str) -> sa_exc.DataError:
    return sa_exc.DataError(statement, None, psycopg.errors.NumericValueOutOfRange(
        f"{pg_type} out of range"))


def _unnest(names: Sequence[str], quote: Callable[[str], str], pg_types: Sequence[str],
            params: Sequence[int]) -> str:
    """``unnest(CAST(%(a<i>)b AS type[]), ...) AS v (names)``: one binary array per column,
    each bound as the parameter numbered in ``params``."""
    casts = ", ".join(f"CAST(%(a{i})b AS {t}[])" for i, t in zip(params, pg_types, strict=True))
    return f"unnest({casts}) AS v ({', '.join(map(quote, names))})"


def _array_params(plan: _Plan, names: Sequence[str], columns: Columns) -> dict[str, Any]:
    return {f"a{i}": list(_processed(p, columns[n]))
            for i, (p, n) in enumerate(zip(plan.processors, names, strict=True))}


def _sqlite_executemany(conn: Connection, plan: _Plan, names: Sequence[str],
                        columns: Columns) -> int:
    """Run the plan's statement for every row; the number of rows changed (sqlite3 sums
    executemany's)."""
    values = [_processed(p, columns[n]) for p, n in zip(plan.processors, names, strict=True)]
    return int(conn.exec_driver_sql(plan.sql, list(zip(*values, strict=True))).rowcount)


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
    names = list(columns)
    postgresql = conn.dialect.name == "postgresql"
    if postgresql and not skip_conflicts_on:
        return _pg_copy(conn, table, columns)

    def build(quote: Callable[[str], str], pg_types: list[str]) -> str:
        target = f"{quote(table.name)} ({', '.join(map(quote, names))})"
        skip = (f" ON CONFLICT ({quote(skip_conflicts_on)}) DO NOTHING"
                if skip_conflicts_on else "")
        if postgresql:
            source = _unnest(names, quote, pg_types, range(len(names)))
            return f"INSERT INTO {target} SELECT * FROM {source}{skip}"
        return f"INSERT INTO {target} VALUES ({', '.join('?' * len(names))}){skip}"

    plan = _plan(conn, table, "insert", names, build, skip_conflicts_on)
    if postgresql:
        return int(conn.exec_driver_sql(plan.sql, _array_params(plan, names, columns)).rowcount)
    return _sqlite_executemany(conn, plan, names, columns)


def update_rows(conn: Connection, table: Table, key: str,
                rows: Sequence[Mapping[str, Any]], **constant: Any) -> None:
    """UPDATE the rows matched on ``key`` with their own values (and ``constant`` ones)."""
    if rows:
        update_columns(conn, table, key, _columns(rows), **constant)


def update_columns(conn: Connection, table: Table, key: str, columns: Columns,
                   **constant: Any) -> None:
    """update_rows for rows given column by column (name -> one value per row)."""
    n = len(columns[key])
    if not n:
        return
    postgresql = conn.dialect.name == "postgresql"
    # In the order of the statement's parameters: what is set, then the key.
    settable = [c for c in columns if c != key]
    names = [*settable, *constant, key]
    values: dict[str, Sequence[Any]] = {**columns, **{
        c: [v] if postgresql else [v] * n for c, v in constant.items()}}

    def build(quote: Callable[[str], str], pg_types: list[str]) -> str:
        t, k = quote(table.name), quote(key)
        if not postgresql:
            sets = ", ".join(f"{quote(c)} = ?" for c in names[:-1])
            return f"UPDATE {t} SET {sets} WHERE {k} = ?"
        at = {c: i for i, c in enumerate(names)}
        sets = [f"{quote(c)} = v.{quote(c)}" for c in settable]
        # A constant is a one-element array too: every parameter is a typed binary array.
        sets += [f"{quote(c)} = (CAST(%(a{at[c]})b AS {pg_types[at[c]]}[]))[1]"
                 for c in constant]
        row_names = [*settable, key]
        source = _unnest(row_names, quote, [pg_types[at[c]] for c in row_names],
                         [at[c] for c in row_names])
        return f"UPDATE {t} SET {', '.join(sets)} FROM {source} WHERE {t}.{k} = v.{k}"

    plan = _plan(conn, table, "update", names, build, key)
    if postgresql:
        conn.exec_driver_sql(plan.sql, _array_params(plan, names, values))
    else:
        _sqlite_executemany(conn, plan, names, values)


class _InValues(BinaryExpression[bool]):
    """``column IN (<list bound at execution>)``, spelled per database (see in_values). Its
    cache key is the expanding IN's it is built from, which fixes its SQL on each database."""

    inherit_cache = True


def in_values(column: ColumnElement[Any], name: str) -> ColumnElement[bool]:
    """``column IN (...)`` for a list bound under ``name`` at execution time.

    On PostgreSQL ``column IN (SELECT unnest(<one array parameter>))``: one parameter keeps
    the statement the same whatever the list's length (an IN list of 500 placeholders cost
    SQLAlchemy and psycopg more to render and parse, every time, than the query did), and the
    planner still looks each element up through the column's index, even on statistics of a
    table much smaller than now; ``= ANY(:array)`` then picks a sequential scan. Elsewhere an
    expanding IN list.
    """
    expr = column.in_(bindparam(name, expanding=True))
    return _InValues(expr.left, expr.right, expr.operator, type_=expr.type,  # type: ignore[attr-defined]
                     negate=expr.negate, modifiers=expr.modifiers)  # type: ignore[attr-defined]


@compiles(_InValues)
def _in_values_default(element: _InValues, compiler: Any, **kw: Any) -> str:
    return compiler.visit_binary(element, **kw)  # type: ignore[no-any-return]


@compiles(_InValues, "postgresql")
def _in_values_postgresql(element: _InValues, compiler: Any, **kw: Any) -> str:
    column, bound = element.left, element.right
    # The element type without a length: a cast to VARCHAR(n)[] would silently truncate a
    # longer value, which could then equal a stored one.
    item = String() if isinstance(column.type, String) else column.type
    array = bindparam(bound.key, type_=postgresql.ARRAY(item))  # type: ignore[attr-defined]
    return (f"{compiler.process(column, **kw)} IN "
            f"(SELECT unnest({compiler.process(array, **kw)}))")
