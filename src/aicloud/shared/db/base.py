"""Declarative base and column types shared by every domain's models."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import DateTime, MetaData
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase
from sqlalchemy.types import TypeDecorator

# Deterministic constraint names: Alembic needs them to alter constraints, and SQLite's batch
# mode can only recreate what it can name.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class UTCDateTime(TypeDecorator[datetime]):
    """A timezone-aware UTC datetime on every backend.

    SQLite has no time zones; values are stored as naive UTC and given tzinfo back on load,
    so code never compares naive with aware datetimes.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column; use aicloud.shared.clock")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)

    # On SQLite, SQLAlchemy converts a value twice (this decorator, then DATETIME's string
    # formatting or regex parsing); usage and ledger batches convert tens of thousands, so
    # both steps are fused into one C-level call each way. The text is SQLAlchemy's own
    # SQLite storage format, "YYYY-MM-DD HH:MM:SS.ffffff" (a test holds them equal).

    def bind_processor(self, dialect: Dialect):  # type: ignore[no-untyped-def]
        if dialect.name != "sqlite":
            # process_bind_param in one call (the drivers need no conversion of their own),
            # and none for a value already in UTC: bulk writes pass thousands.
            def process_aware(value: datetime | None) -> datetime | None:
                if value is None or value.tzinfo is UTC:
                    return value
                if value.tzinfo is None:
                    raise ValueError(
                        "naive datetime given to a UTC column; use aicloud.shared.clock")
                return value.astimezone(UTC)

            return process_aware

        def process(value: datetime | None) -> str | None:
            if value is None:
                return None
            if value.tzinfo is not UTC:
                if value.tzinfo is None:
                    raise ValueError(
                        "naive datetime given to a UTC column; use aicloud.shared.clock")
                value = value.astimezone(UTC)
            return value.isoformat(" ", "microseconds")[:-6]  # without "+00:00"

        return process

    def result_processor(self, dialect: Dialect, coltype: object):  # type: ignore[no-untyped-def]
        if dialect.name != "sqlite":
            def process_aware(value: datetime | None) -> datetime | None:
                if value is None or value.tzinfo is UTC:
                    return value
                if value.tzinfo is None:
                    return value.replace(tzinfo=UTC)
                return value.astimezone(UTC)

            return process_aware

        def process(value: str | None) -> datetime | None:
            return None if value is None else datetime.fromisoformat(value).replace(tzinfo=UTC)

        return process
