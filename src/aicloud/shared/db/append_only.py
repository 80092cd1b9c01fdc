"""Append-only tables: database triggers that refuse UPDATE and DELETE.

The application never updates or deletes these rows; the triggers make the database refuse it
too, so a bug or a careless ad-hoc statement cannot rewrite history. (Someone with rights to
drop triggers can still do it; the audit chain's verification is what catches that.)
TRUNCATE is not covered on PostgreSQL (row triggers do not fire for it): revoking TRUNCATE from
the application's role is the deployment-level guard.
Used from migrations: ``for sql in append_only_ddl(dialect, "audit_events"): op.execute(sql)``.
"""

from __future__ import annotations

PG_FUNCTION = "aicloud_refuse_change"


def trigger_names(table: str) -> list[str]:
    return [f"{table}_no_update", f"{table}_no_delete"]


def append_only_ddl(dialect: str, table: str) -> list[str]:
    """Statements that make ``table`` refuse UPDATE and DELETE on SQLite or PostgreSQL."""
    if dialect == "postgresql":
        # CREATE OR REPLACE: several tables (and domains) share the one function.
        fn = (
            f"CREATE OR REPLACE FUNCTION {PG_FUNCTION}() RETURNS trigger LANGUAGE plpgsql AS $$ "
            "BEGIN RAISE EXCEPTION '% on % refused: the table is append-only', "
            "TG_OP, TG_TABLE_NAME USING ERRCODE = 'restrict_violation'; END $$"
        )
        return [fn] + [
            f"CREATE TRIGGER {name} BEFORE {op} ON {table} "
            f"FOR EACH ROW EXECUTE FUNCTION {PG_FUNCTION}()"
            for name, op in zip(trigger_names(table), ("UPDATE", "DELETE"), strict=True)
        ]
    if dialect == "sqlite":
        return [
            f"CREATE TRIGGER {name} BEFORE {op} ON {table} BEGIN "
            f"SELECT RAISE(ABORT, '{op} on {table} refused: the table is append-only'); END"
            for name, op in zip(trigger_names(table), ("UPDATE", "DELETE"), strict=True)
        ]
    raise ValueError(f"append-only triggers are not implemented for {dialect}")


def drop_append_only_ddl(dialect: str, table: str) -> list[str]:
    on = f" ON {table}" if dialect == "postgresql" else ""
    return [f"DROP TRIGGER IF EXISTS {name}{on}" for name in trigger_names(table)]
