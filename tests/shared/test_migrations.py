from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from aicloud.runtime.models import metadata
from aicloud.shared.db import Database, migrate


@pytest.fixture(params=["sqlite", "postgresql"])
def empty_db(request: pytest.FixtureRequest, tmp_path: Path) -> Database:
    if request.param == "sqlite":
        return Database(f"sqlite:///{tmp_path / 'empty.db'}")
    return Database(request.getfixturevalue("fresh_pg_url"))


def _tables(db: Database) -> set[str]:
    return set(sa.inspect(db.engine).get_table_names()) - {"alembic_version"}


def test_upgrade_downgrade_upgrade(empty_db: Database) -> None:
    assert migrate.current_revisions(empty_db) == []
    migrate.upgrade(empty_db)
    assert migrate.is_up_to_date(empty_db)
    tables = _tables(empty_db)
    assert {"users", "auth_sessions", "idempotency_keys"} <= tables

    migrate.downgrade(empty_db, "base")
    assert migrate.current_revisions(empty_db) == []
    assert _tables(empty_db) == set()

    migrate.upgrade(empty_db)
    assert _tables(empty_db) == tables
    empty_db.dispose()


def test_migrations_match_the_models(empty_db: Database) -> None:
    """A model change without its migration (or the reverse) fails here."""
    migrate.upgrade(empty_db)
    with empty_db.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}),
                                metadata)
    assert diff == []
    empty_db.dispose()


def test_every_domain_migration_folder_is_found() -> None:
    names = {p.parent.name + "/" + p.name for p in migrate.version_locations()}
    assert "alembic/versions" in names
    assert "iam/migrations" in names
