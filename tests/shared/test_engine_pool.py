"""The PostgreSQL pool pings a connection before reuse only when it may be dead: one the
server ended while it sat in the pool is replaced without a caller seeing an error, one used
a moment ago is not pinged (a round trip saved per request), one idle past the bound is.
And one connection serves read-only and write transactions in turn."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
import sqlalchemy as sa

from aicloud.shared.db import Database, engine


@pytest.fixture
def pg(fresh_pg_url: str) -> Iterator[Database]:
    database = Database(fresh_pg_url, pool_size=3)
    yield database
    database.dispose()


def _backend_pid(db: Database) -> int:
    with db.read_transaction() as s:
        return int(s.execute(sa.text("SELECT pg_backend_pid()")).scalar_one())


@pytest.fixture
def pings(pg: Database, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Every ping the pool sends (the dialect's do_ping, counted)."""
    seen: list[int] = []
    dialect = pg.engine.dialect
    original = dialect.do_ping

    def counted(dbapi_conn: object) -> bool:
        seen.append(1)
        return original(dbapi_conn)

    monkeypatch.setattr(dialect, "do_ping", counted)
    return seen


def test_a_connection_reused_at_once_is_not_pinged(pg: Database, pings: list[int]) -> None:
    pids = {_backend_pid(pg) for _ in range(20)}
    assert len(pids) <= 3  # pooled, not reconnected
    assert pings == []


def test_a_connection_idle_past_the_bound_is_pinged(pg: Database, pings: list[int],
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    _backend_pid(pg)
    monkeypatch.setattr(engine, "PING_AFTER_IDLE_SECONDS", 0.0)
    time.sleep(0.01)
    _backend_pid(pg)
    assert pings == [1]


def test_connections_the_server_ended_in_the_pool_are_replaced_without_an_error(
        pg: Database, pings: list[int]) -> None:
    # Three connections in the pool, each used a moment ago.
    held = [pg.read_engine.connect() for _ in range(3)]
    pids = [int(c.execute(sa.text("SELECT pg_backend_pid()")).scalar_one()) for c in held]
    for c in held:
        c.close()
    # Autocommit: in a transaction pg_stat_activity would show its first snapshot throughout.
    admin = sa.create_engine(pg.url, poolclass=sa.pool.NullPool, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            for pid in pids:
                conn.execute(sa.text("SELECT pg_terminate_backend(:p)"), {"p": pid})
            deadline = time.monotonic() + 10
            while conn.execute(sa.text("SELECT count(*) FROM pg_stat_activity "
                                       "WHERE pid = ANY(:p)"), {"p": pids}).scalar_one():
                assert time.monotonic() < deadline
                time.sleep(0.05)
    finally:
        admin.dispose()
    time.sleep(0.1)  # the termination notice reaches the pooled sockets
    # Well within the idle bound: only what the server sent tells the pool they are dead.
    fresh = {_backend_pid(pg) for _ in range(6)}
    assert not fresh & set(pids)
    assert len(pings) >= 1


def test_one_connection_alternates_read_only_and_write_transactions(fresh_pg_url: str) -> None:
    """Read-only is set on the connection when a transaction begins (and stays until the
    next one asks otherwise): on one pooled connection, reads refuse to write and writes
    write, in any order."""
    db = Database(fresh_pg_url, pool_size=1)
    try:
        with db.transaction() as s:
            s.execute(sa.text("CREATE TABLE t (x int)"))
        for _ in range(2):
            with pytest.raises(sa.exc.DBAPIError, match="read-only"), db.read_transaction() as s:
                s.execute(sa.text("INSERT INTO t VALUES (1)"))
            with db.transaction() as s:
                s.execute(sa.text("INSERT INTO t VALUES (1)"))
        with db.read_transaction() as s:
            assert s.execute(sa.text("SELECT count(*) FROM t")).scalar_one() == 2
            pid = s.execute(sa.text("SELECT pg_backend_pid()")).scalar_one()
        with db.transaction() as s:
            assert s.execute(sa.text("SELECT pg_backend_pid()")).scalar_one() == pid
    finally:
        db.dispose()
