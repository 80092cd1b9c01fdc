"""Fresh, migrated databases for benchmarks: a SQLite file and (when reachable) PostgreSQL."""

from __future__ import annotations

import os
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import sqlalchemy as sa

from aicloud.shared.db import Database, migrate

PG_ADMIN_URL = os.environ.get(
    "AICLOUD_BENCH_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")


@contextmanager
def sqlite_database() -> Iterator[Database]:
    with tempfile.TemporaryDirectory() as d:
        db = Database(f"sqlite:///{Path(d) / 'bench.db'}")
        migrate.upgrade(db)
        try:
            yield db
        finally:
            db.dispose()


@contextmanager
def postgres_database() -> Iterator[Database | None]:
    name = f"aicloud_bench_{uuid.uuid4().hex[:10]}"
    try:
        admin = sa.create_engine(Database(PG_ADMIN_URL).url, isolation_level="AUTOCOMMIT",
                                 connect_args={"connect_timeout": 3})
        with admin.connect() as c:
            c.execute(sa.text(f'CREATE DATABASE "{name}"'))
    except sa.exc.OperationalError as exc:
        print(f"PostgreSQL unreachable, its benchmarks are not run: {exc}".splitlines()[0])
        yield None
        return
    db = Database(Database(PG_ADMIN_URL).url.rsplit("/", 1)[0] + "/" + name)
    try:
        migrate.upgrade(db)
        yield db
    finally:
        db.dispose()
        with admin.connect() as c:
            c.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@contextmanager
def each_database() -> Iterator[list[tuple[str, Database]]]:
    with sqlite_database() as lite, postgres_database() as pg:
        yield [("sqlite", lite)] + ([("postgresql", pg)] if pg is not None else [])
