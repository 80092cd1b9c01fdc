"""Counting the transactions that wrote, as the database itself tells: for load tests and
benchmarks of pollers that should mostly read (the node agent).

PostgreSQL gives a transaction an id only when it first writes or locks a row
(``txid_current_if_assigned()`` is null before); SQLite counts the rows each connection
changed (``total_changes``). Each is read on the raw connection just before the commit, so
a statement that matched no row, a read, or a ``BEGIN IMMEDIATE`` that wrote nothing is not
a write.
"""

from __future__ import annotations

import threading
from types import TracebackType
from typing import Any

from sqlalchemy import Engine, event

_CHANGES = "aicloud_total_changes"


class WriteCounter:
    """``with WriteCounter(db.engine) as c: ...`` then ``c.writes``, ``c.reads``."""

    def __init__(self, engine: Engine):
        self.engine = engine
        self.dialect = engine.dialect.name
        self.writes = 0
        self.reads = 0
        self._lock = threading.Lock()

    def __enter__(self) -> WriteCounter:
        event.listen(self.engine, "begin", self._on_begin)
        event.listen(self.engine, "commit", self._on_commit)
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        event.remove(self.engine, "begin", self._on_begin)
        event.remove(self.engine, "commit", self._on_commit)

    def reset(self) -> None:
        with self._lock:
            self.writes = self.reads = 0

    def _raw(self, conn: Any) -> Any:
        return conn.connection.dbapi_connection

    def _on_begin(self, conn: Any) -> None:
        if self.dialect == "sqlite":
            conn.info[_CHANGES] = self._raw(conn).total_changes

    def _on_commit(self, conn: Any) -> None:
        raw = self._raw(conn)
        if self.dialect == "postgresql":
            cur = raw.cursor()
            try:
                cur.execute("SELECT txid_current_if_assigned()")
                wrote = cur.fetchone()[0] is not None
            finally:
                cur.close()
        elif self.dialect == "sqlite":
            before = conn.info.pop(_CHANGES, None)
            wrote = before is None or raw.total_changes != before
        else:  # unknown backend: count every commit as a write (an upper bound)
            wrote = True
        with self._lock:
            if wrote:
                self.writes += 1
            else:
                self.reads += 1
