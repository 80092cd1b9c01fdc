"""Test fixtures: real databases (SQLite and PostgreSQL), apps and live servers.

Tests that take ``db`` run twice, on SQLite and on PostgreSQL. Each test run creates its own
PostgreSQL database (per xdist worker) and drops it at the end. When PostgreSQL cannot be
reached, its half is skipped with a loud warning on a laptop and fails when CI=true.
"""

from __future__ import annotations

import os
import shutil
import socket
import stat
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
import uvicorn
from argon2 import PasswordHasher
from fastapi import FastAPI

from aicloud.api import create_app
from aicloud.api.server import base_url, server_config
from aicloud.runtime import AppContext, build_context
from aicloud.shared import security
from aicloud.shared.config import Settings, load_settings
from aicloud.shared.db import Database, migrate

PG_ADMIN_URL = os.environ.get(
    "AICLOUD_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
_pg_skip_reason: list[str] = []


def _pg_error() -> str | None:
    try:
        eng = sa.create_engine(Database(PG_ADMIN_URL).url, connect_args={"connect_timeout": 3})
        with eng.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
        eng.dispose()
        return None
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}".splitlines()[0]


@pytest.fixture(scope="session")
def pg_admin_url() -> str:
    error = _pg_error()
    if error:
        msg = f"PostgreSQL at {PG_ADMIN_URL} is unreachable ({error})"
        if IN_CI:
            pytest.fail(msg + "; CI requires it (set AICLOUD_TEST_POSTGRES_URL)", pytrace=False)
        _pg_skip_reason.append(msg)
        pytest.skip(msg)
    return PG_ADMIN_URL


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if _pg_skip_reason:
        terminalreporter.write_sep("!", "POSTGRESQL TESTS SKIPPED", red=True, bold=True)
        terminalreporter.write_line(_pg_skip_reason[0], red=True)
        terminalreporter.write_line(
            "Half of the database tests did not run. Start PostgreSQL or set "
            "AICLOUD_TEST_POSTGRES_URL.", red=True)


# argon2id as production configures it costs ~0.2 s of CPU per hash or check (64 MiB, 3 passes,
# 4 lanes), and a test world makes a dozen of them: most of the suite's CPU. Tests in this
# process hash with the same algorithm at the smallest cost; a stored hash names its own
# parameters, so every check still runs argon2id. Tests whose subject is the cost (login
# races, whose window is the hashing) take ``production_password_hashing``; processes the
# tests start hash as in production.
_PRODUCTION_HASHING = (security._hasher, security._DUMMY_HASH)
_CHEAP_HASHER = PasswordHasher(time_cost=1, memory_cost=64, parallelism=1)
_CHEAP_HASHING = (_CHEAP_HASHER, _CHEAP_HASHER.hash("dummy-password-for-timing"))


def _use_hashing(monkeypatch: pytest.MonkeyPatch, hashing: tuple[PasswordHasher, str]) -> None:
    monkeypatch.setattr(security, "_hasher", hashing[0])
    monkeypatch.setattr(security, "_DUMMY_HASH", hashing[1])


@pytest.fixture(scope="session", autouse=True)
def _cheap_password_hashing() -> Iterator[None]:
    with pytest.MonkeyPatch.context() as mp:
        _use_hashing(mp, _CHEAP_HASHING)
        yield


@pytest.fixture
def production_password_hashing(monkeypatch: pytest.MonkeyPatch) -> None:
    _use_hashing(monkeypatch, _PRODUCTION_HASHING)


def _worker() -> str:
    return os.environ.get("PYTEST_XDIST_WORKER", "main")


def create_pg_database(admin_url: str, name: str, template: str | None = None) -> str:
    admin = sa.create_engine(Database(admin_url).url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'
                             + (f' TEMPLATE "{template}"' if template else "")))
    admin.dispose()
    return Database(admin_url).url.rsplit("/", 1)[0] + "/" + name


def drop_pg_database(admin_url: str, name: str) -> None:
    admin = sa.create_engine(Database(admin_url).url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture
def fresh_pg_url(pg_admin_url: str) -> Iterator[str]:
    """An empty PostgreSQL database for this test alone (migration tests)."""
    name = f"aicloud_test_{uuid.uuid4().hex[:12]}"
    url = create_pg_database(pg_admin_url, name)
    yield url
    drop_pg_database(pg_admin_url, name)


@pytest.fixture(scope="session")
def _pg_template(pg_admin_url: str) -> Iterator[str]:
    """The name of a migrated PostgreSQL database (per xdist worker) that the others copy:
    CREATE DATABASE ... TEMPLATE instead of running every migration again."""
    name = f"aicloud_template_{_worker()}_{uuid.uuid4().hex[:8]}"
    db = Database(create_pg_database(pg_admin_url, name))
    migrate.upgrade(db)
    db.dispose()  # a template is copied only while nobody is connected to it
    yield name
    drop_pg_database(pg_admin_url, name)


@pytest.fixture
def migrated_pg_url(pg_admin_url: str, _pg_template: str) -> Iterator[str]:
    """A migrated PostgreSQL database for this test alone (other processes share it)."""
    name = f"aicloud_test_{uuid.uuid4().hex[:12]}"
    url = create_pg_database(pg_admin_url, name, template=_pg_template)
    yield url
    drop_pg_database(pg_admin_url, name)


@pytest.fixture(scope="session")
def _pg_session_db(pg_admin_url: str, _pg_template: str) -> Iterator[Database]:
    """One migrated PostgreSQL database for the whole run (per xdist worker)."""
    name = f"aicloud_test_{_worker()}_{uuid.uuid4().hex[:8]}"
    db = Database(create_pg_database(pg_admin_url, name, template=_pg_template))
    yield db
    db.dispose()
    drop_pg_database(pg_admin_url, name)


@pytest.fixture
def tmp_path(tmp_path: Path) -> Path:
    """pytest's tmp_path, made passable (not listable) by other users up from the temp dir:
    the local provider's sandbox mounts a workload's dir by path as the workload's own uid,
    and pytest creates its dirs 0700."""
    top = Path(tempfile.gettempdir()).resolve()
    for directory in (tmp_path, *tmp_path.parents):
        if directory == top or not directory.is_relative_to(top):
            break
        directory.chmod(directory.stat().st_mode | stat.S_IXOTH)
    return tmp_path


@pytest.fixture(scope="session")
def _sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("template") / "template.db"
    db = Database(f"sqlite:///{path}")
    migrate.upgrade(db)
    db.dispose()  # the last connection to close checkpoints the WAL into the file
    return path


# Empties every table but alembic_version (the migrations' seed rows included) and restarts
# the sequences: what TRUNCATE ... RESTART IDENTITY did, without its cost (TRUNCATE gives each
# of ~45 tables and their indexes new files: ~0.1-0.6 s per test, DELETE of a test's few rows
# takes milliseconds). The replica role skips the append-only and foreign-key triggers
# (superuser only, as the tests connect).
_EMPTY_ALL = sa.text("""
DO $$
DECLARE r record;
BEGIN
  SET LOCAL session_replication_role = replica;
  FOR r IN SELECT tablename FROM pg_tables
           WHERE schemaname = current_schema() AND tablename <> 'alembic_version' LOOP
    EXECUTE format('DELETE FROM %I', r.tablename);
  END LOOP;
  FOR r IN SELECT sequencename, start_value FROM pg_sequences
           WHERE schemaname = current_schema() AND last_value IS NOT NULL LOOP
    PERFORM setval(quote_ident(r.sequencename), r.start_value, false);
  END LOOP;
END $$""")


def empty_all(db: Database) -> None:
    with db.engine.begin() as conn:
        conn.execute(_EMPTY_ALL)


@pytest.fixture(params=["sqlite", "postgresql"])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    """A migrated, empty database; the test runs once on each backend."""
    if request.param == "sqlite":
        path = tmp_path / "aicloud.db"
        shutil.copy(request.getfixturevalue("_sqlite_template"), path)
        database = Database(f"sqlite:///{path}")
        yield database
        database.dispose()
    else:
        database = request.getfixturevalue("_pg_session_db")
        empty_all(database)  # the next test empties what this one leaves
        _forget_policy_snapshot(database)
        yield database


def _forget_policy_snapshot(db: Database) -> None:
    """The session's PostgreSQL database is reused, emptied: its policy version restarts,
    so the IAM snapshot an earlier test shared on this engine could carry the same version
    number with other bindings, and be taken as current."""
    from aicloud.platform.iam.authorize import POLICY

    POLICY._shared.pop(db.engine.pool, None)


@pytest.fixture
def sqlite_db(tmp_path: Path, _sqlite_template: Path) -> Iterator[Database]:
    """A migrated SQLite database, for tests that are not about the database backend."""
    path = tmp_path / "aicloud.db"
    shutil.copy(_sqlite_template, path)
    database = Database(f"sqlite:///{path}")
    yield database
    database.dispose()


def make_settings(db: Database, **overrides: object) -> Settings:
    # No anchor sink unless a test asks for one: the dev profile's would be the checkout's var/.
    overrides.setdefault("audit_anchor_sink", None)
    return load_settings("dev", database_url=db.url, controllers_enabled=False, **overrides)


@pytest.fixture
def ctx(db: Database) -> AppContext:
    return build_context(make_settings(db), db)


@pytest.fixture
def sqlite_ctx(sqlite_db: Database) -> AppContext:
    return build_context(make_settings(sqlite_db), sqlite_db)


@pytest.fixture
def client(ctx: AppContext) -> Iterator[object]:
    from fastapi.testclient import TestClient

    with TestClient(create_app(ctx), raise_server_exceptions=False) as c:
        yield c


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LiveServer:
    """The real API on a real socket, in a thread of the test process."""

    def __init__(self, ctx: AppContext, *, app: FastAPI | None = None,
                 run_controllers: bool = False):
        self.port = free_port()
        self.url = base_url(ctx.settings, "127.0.0.1", self.port)
        # The production server configuration (TLS when the settings have a certificate,
        # uvicorn's proxy headers off), on a free port of 127.0.0.1.
        config = server_config(app or create_app(ctx, run_controllers=run_controllers),
                               ctx.settings, host="127.0.0.1", port=self.port)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> LiveServer:
        self.thread.start()
        deadline = time.monotonic() + 15
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("live server did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(10)


@pytest.fixture
def live_server(ctx: AppContext) -> Iterator[LiveServer]:
    with LiveServer(ctx) as server:
        yield server
