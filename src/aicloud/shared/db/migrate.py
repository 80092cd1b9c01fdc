"""Schema migrations with Alembic.

Each domain owns its migrations in a ``migrations/`` folder beside its models, as an Alembic
branch that starts from the shared base revision. ``upgrade`` goes to every branch head, so
domains evolve independently; a migration that needs another domain's table says so with
``depends_on``.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from aicloud.shared.db.engine import Database

PACKAGE_ROOT = Path(__file__).resolve().parents[2]  # src/aicloud
SCRIPT_LOCATION = Path(__file__).resolve().parent / "alembic"


def version_locations() -> list[Path]:
    """The base versions folder plus every domain's ``migrations`` folder."""
    found = [SCRIPT_LOCATION / "versions"]
    for path in sorted(PACKAGE_ROOT.rglob("migrations")):
        if path.is_dir() and "__pycache__" not in path.parts and any(path.glob("*.py")):
            found.append(path)
    return found


def _script_config() -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(SCRIPT_LOCATION))
    cfg.set_main_option("version_locations", " ".join(str(p) for p in version_locations()))
    cfg.set_main_option("path_separator", "space")
    return cfg


def alembic_config(db: Database) -> Config:
    cfg = _script_config()
    cfg.attributes["database"] = db
    return cfg


def upgrade(db: Database, target: str = "heads") -> None:
    command.upgrade(alembic_config(db), target)


def downgrade(db: Database, target: str = "base") -> None:
    command.downgrade(alembic_config(db), target)


def current_revisions(db: Database) -> list[str]:
    with db.read_engine.connect() as conn:  # on SQLite: no write lock for /readyz
        return sorted(MigrationContext.configure(conn).get_current_heads())


@lru_cache(maxsize=1)
def _code_heads() -> tuple[str, ...]:
    # The heads are a property of the code on disk, not of a database: read them once.
    return tuple(sorted(ScriptDirectory.from_config(_script_config()).get_heads()))


def head_revisions() -> list[str]:
    return list(_code_heads())


def is_up_to_date(db: Database) -> bool:
    return current_revisions(db) == head_revisions()
