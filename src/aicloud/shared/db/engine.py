"""Engines, sessions and transactions: the only place in the code base that creates engines.

Two kinds of transaction:

- ``transaction()``: may write. On SQLite it begins ``BEGIN IMMEDIATE`` (the database's one
  write lock, taken up front so concurrent writers queue on busy_timeout instead of failing).
- ``read_transaction()``: reads only. On SQLite a deferred ``BEGIN`` (WAL readers never wait
  for the writer) under ``PRAGMA query_only``; on PostgreSQL ``BEGIN READ ONLY``. A write in
  it fails loudly: the ORM refuses to flush (``ReadOnlyViolation``) and the database refuses
  any statement that writes.

The pool is bounded (``pool_size`` connections, no overflow) and a caller that cannot get a
connection within ``pool_timeout`` seconds gets ``sqlalchemy.exc.TimeoutError`` (the API
answers 503), never a 30 s hang.
"""

from __future__ import annotations

import select
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.exc import InvalidatePoolError
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import NullPool, StaticPool

SQLITE_BUSY_TIMEOUT_MS = 30_000
# Connections per process, and how long a caller waits for one before giving up.
DEFAULT_POOL_SIZE = 24
DEFAULT_POOL_TIMEOUT_SECONDS = 3.0
# The execution option that marks a connection's transactions read-only.
READ_ONLY = "aicloud_read_only"
_QUERY_ONLY = "aicloud_sqlite_query_only"


class ReadOnlyViolation(RuntimeError):
    """Something tried to write inside a read-only transaction (a bug: a GET that writes)."""


def normalize_url(url: str) -> str:
    """Accept the usual spellings of a PostgreSQL URL and pick the psycopg 3 driver."""
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


def make_engine(url: str, *, echo: bool = False, pool_size: int = DEFAULT_POOL_SIZE,
                pool_timeout: float = DEFAULT_POOL_TIMEOUT_SECONDS) -> Engine:
    url = normalize_url(url)
    # No overflow: pool_size is the process's real bound, which the API's request slots and
    # thread pool are derived from (aicloud.api.server).
    pool = {"pool_size": pool_size, "max_overflow": 0, "pool_timeout": pool_timeout}
    if url.startswith("sqlite"):
        return _make_sqlite_engine(url, echo=echo, pool=pool)
    engine = create_engine(url, echo=echo, **pool)
    _ping_when_in_doubt(engine)

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        # psycopg then begins with BEGIN READ ONLY (in the same round trip as a plain BEGIN).
        # Set only when it changes, it stays with the connection: SQLAlchemy's
        # postgresql_readonly option set and reset it at every checkout and return.
        read_only = bool(conn.get_execution_options().get(READ_ONLY))
        driver = conn.connection.driver_connection
        if driver.read_only is not read_only:
            driver.read_only = read_only

    return engine


# A pooled server connection is pinged before reuse only when it may have died while it sat
# in the pool: when the server sent it something since (a server that restarts, or ends the
# session, sends an error and closes the socket: both make it readable), or when it sat
# unused for longer than this. A ping on every checkout (pool_pre_ping) was one round trip
# in five of a request's read.
PING_AFTER_IDLE_SECONDS = 5.0
_RETURNED_AT = "aicloud_returned_at"


def _ping_when_in_doubt(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _connected(_dbapi_conn: Any, record: Any) -> None:
        record.info[_RETURNED_AT] = time.monotonic()

    @event.listens_for(engine, "checkin")
    def _returned(dbapi_conn: Any, record: Any) -> None:
        if dbapi_conn is not None:  # None: the connection was invalidated
            record.info[_RETURNED_AT] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _checkout(dbapi_conn: Any, record: Any, _proxy: Any) -> None:
        returned = record.info.get(_RETURNED_AT)
        if (returned is not None and time.monotonic() - returned <= PING_AFTER_IDLE_SECONDS
                and not _readable(dbapi_conn)):
            return
        try:
            engine.dialect.do_ping(dbapi_conn)
        except engine.dialect.loaded_dbapi.Error as exc:
            # As pool_pre_ping does: this connection is dead, and so probably are those
            # opened before it; the pool reconnects (retrying this checkout).
            raise InvalidatePoolError(str(exc)) from exc


def _readable(dbapi_conn: Any) -> bool:
    """Something (or end of file) is waiting on an idle connection's socket; True when that
    cannot be told."""
    try:
        poller = select.poll()
        poller.register(dbapi_conn.fileno(), select.POLLIN | select.POLLPRI)
        return bool(poller.poll(0))
    except (AttributeError, OSError, ValueError):
        return True


def _make_sqlite_engine(url: str, *, echo: bool, pool: dict[str, Any]) -> Engine:
    kwargs: dict[str, Any] = {"connect_args": {"check_same_thread": False}}
    path = url.partition(":///")[2]
    if path in ("", ":memory:"):
        kwargs["poolclass"] = StaticPool
    else:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        kwargs.update(pool)
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
        read_only = bool(conn.get_execution_options().get(READ_ONLY))
        info = conn.connection.info  # lives as long as the DBAPI connection
        if info.get(_QUERY_ONLY, False) != read_only:
            # query_only makes SQLite refuse every write ("attempt to write a readonly
            # database"); set only when it changes, it stays with the connection.
            conn.exec_driver_sql(f"PRAGMA query_only={int(read_only)}")
            info[_QUERY_ONLY] = read_only
        if read_only:
            # Deferred: in WAL mode a reader takes no lock and never waits for the writer.
            conn.exec_driver_sql("BEGIN")
        else:
            # A deferred transaction that later writes can fail with SQLITE_BUSY without
            # waiting; taking the write lock up front makes writers queue on busy_timeout.
            conn.exec_driver_sql("BEGIN IMMEDIATE")

    return engine


def _refuse_orm_writes(session: Session, _flush_context: Any, _instances: Any) -> None:
    """before_flush of read-only sessions: name what was about to be written."""
    changed = [*session.new, *session.deleted,
               *(o for o in session.dirty if session.is_modified(o))]
    if changed:
        names = ", ".join(sorted({type(o).__name__ for o in changed}))
        raise ReadOnlyViolation(f"a read-only transaction tried to write ({names}); "
                                "writes belong in a write transaction (a non-GET request "
                                "or Database.transaction())")


def snapshot_reader(engine: Engine) -> Engine | None:
    """A second, never-pooled engine on the same SQLite file whose transactions only read:
    deferred ``BEGIN`` under ``query_only``, so a reader never waits for the writer's lock
    (WAL) and cannot be queued behind requests for a pooled connection. None for an
    in-memory database, which no second connection can see."""
    if engine.url.database in (None, "", ":memory:"):
        return None
    reader = create_engine(engine.url, poolclass=NullPool,
                           connect_args={"check_same_thread": False})

    @event.listens_for(reader, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None  # SQLAlchemy, not pysqlite, begins (below)
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA query_only=ON")
        cur.execute("PRAGMA busy_timeout=5000")  # a poller: give up sooner than writers
        cur.close()

    @event.listens_for(reader, "begin")
    def _on_begin(conn: Any) -> None:
        conn.exec_driver_sql("BEGIN")  # deferred: a read snapshot, no lock on writers

    return reader


class Database:
    """An engine plus a session factory. Create one per process (the composition root)."""

    def __init__(self, url: str, *, echo: bool = False, pool_size: int = DEFAULT_POOL_SIZE,
                 pool_timeout: float = DEFAULT_POOL_TIMEOUT_SECONDS):
        self.url = normalize_url(url)
        self.engine = make_engine(self.url, echo=echo, pool_size=pool_size,
                                  pool_timeout=pool_timeout)
        # An in-memory SQLite database is one shared connection.
        self.pool_size = 1 if isinstance(self.engine.pool, StaticPool) else pool_size
        self.pool_timeout = pool_timeout
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        # The same pool; its connections' transactions are read-only.
        self.read_engine = read_engine = self.engine.execution_options(**{READ_ONLY: True})
        self._read_sessions = sessionmaker(read_engine, expire_on_commit=False)
        event.listen(self._read_sessions, "before_flush", _refuse_orm_writes)

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
    def read_transaction(self) -> Iterator[Session]:
        """A session inside one read-only transaction (see the module docstring). It ends
        with a commit, so a change left pending in the session is flushed and refused rather
        than silently dropped."""
        session = self._read_sessions()
        try:
            with session.begin():
                yield session
        finally:
            session.close()

    def session(self, *, read_only: bool = False) -> Session:
        """A bare session; the caller owns its transactions (used by request handlers)."""
        return self._read_sessions() if read_only else self._sessions()

    def ping(self) -> None:
        with self.read_transaction() as session:
            session.execute(text("SELECT 1"))

    def dispose(self) -> None:
        self.engine.dispose()
