"""Engines, sessions and transactions: the only place in the code base that creates engines."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import StaticPool

SQLITE_BUSY_TIMEOUT_MS = 30_000
_READING = "aicloud_reading"  # execution option: a transaction that only reads


def normalize_url(url: str) -> str:
    """Accept the usual spellings of a PostgreSQL URL and pick the psycopg 3 driver."""
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


def make_engine(url: str, *, echo: bool = False) -> Engine:
    url = normalize_url(url)
    if url.startswith("sqlite"):
        return _make_sqlite_engine(url, echo=echo)
    return create_engine(url, echo=echo, pool_pre_ping=True, future=True)


def _make_sqlite_engine(url: str, *, echo: bool) -> Engine:
    kwargs: dict[str, Any] = {"connect_args": {"check_same_thread": False}}
    path = url.partition(":///")[2]
    if path in ("", ":memory:"):
        kwargs["poolclass"] = StaticPool
    else:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url, echo=echo, **kwargs)

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # Let SQLAlchemy, not pysqlite, decide when transactions begin (see _on_begin).
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        # A deferred transaction that later writes can fail with SQLITE_BUSY without waiting;
        # taking the write lock up front makes concurrent writers queue on busy_timeout.
        # A transaction that only reads (Database.reading) needs no lock: a WAL reader
        # neither waits for the writer nor holds it up.
        reading = conn.get_execution_options().get(_READING, False)
        conn.exec_driver_sql("BEGIN" if reading else "BEGIN IMMEDIATE")

    return engine


class Database:
    """An engine plus a session factory. Create one per process (the composition root)."""

    def __init__(self, url: str, *, echo: bool = False):
        self.url = normalize_url(url)
        self.engine = make_engine(self.url, echo=echo)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False, future=True)
        self._reading_sessions = sessionmaker(
            self.engine.execution_options(**{_READING: True}), expire_on_commit=False,
            future=True)

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    @contextmanager
    def transaction(self) -> Iterator[Session]:
        """A session inside one transaction: committed on success, rolled back on error."""
        session = self._sessions()
        try:
            with session.begin():
                yield session
        finally:
            session.close()

    @contextmanager
    def reading(self) -> Iterator[Session]:
        """A transaction for reads only (a poll that usually finds nothing to do). On SQLite it
        begins deferred instead of taking the write lock; write in :meth:`transaction`."""
        session = self._reading_sessions()
        try:
            with session.begin():
                yield session
        finally:
            session.close()

    def session(self) -> Session:
        """A bare session; the caller owns its transactions (used by request handlers)."""
        return self._sessions()

    def ping(self) -> None:
        with self.engine.connect() as conn:
            conn.execute(text("SELECT 1"))

    def dispose(self) -> None:
        self.engine.dispose()
