"""Database primitives: engines, sessions, the declarative base and migrations."""

from aicloud.shared.db.base import Base, UTCDateTime
from aicloud.shared.db.engine import (
    Database,
    ReadOnlyViolation,
    make_engine,
    normalize_url,
    snapshot_reader,
)

__all__ = ["Base", "Database", "ReadOnlyViolation", "UTCDateTime", "make_engine", "normalize_url",
           "snapshot_reader"]
