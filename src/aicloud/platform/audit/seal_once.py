"""The database rule for ``audit_events``: append-only, except that each event is sealed once.

Writers insert events unsealed (``seq``, ``prev_hash`` and ``hash`` NULL); the sealer later
sets those three columns, once. Every other UPDATE, and every DELETE, is refused by a trigger,
as for the other append-only tables (aicloud.shared.db.append_only). Used by the migration and
by tests that play an intruder who drops the triggers and puts them back.
"""

from __future__ import annotations

from aicloud.shared.db.append_only import PG_FUNCTION

TABLE = "audit_events"
UPDATE_TRIGGER = f"{TABLE}_no_update"
DELETE_TRIGGER = f"{TABLE}_no_delete"
PG_SEAL_FUNCTION = "aicloud_audit_seal_once"
SEALED = ("seq", "prev_hash", "hash")
# Every other column: a seal must leave them as they were (a later column joins this list).
UNCHANGED = ("id", "position", "occurred_at", "actor_id", "actor_kind", "api_key_id", "ip",
             "user_agent", "request_id", "action", "target_type", "target_id", "scope_path",
             "outcome", "changes", "details")
MESSAGE = "the table is append-only (an event is only ever sealed once)"


def _is_seal(dialect: str) -> str:
    same = "IS NOT DISTINCT FROM" if dialect == "postgresql" else "IS"
    return " AND ".join([
        "OLD.seq IS NULL", *(f"NEW.{c} IS NOT NULL" for c in SEALED),
        *(f"NEW.{c} {same} OLD.{c}" for c in UNCHANGED)])


def seal_once_ddl(dialect: str) -> list[str]:
    """Statements that make ``audit_events`` refuse every change but the one seal."""
    if dialect == "postgresql":
        fn = (f"CREATE OR REPLACE FUNCTION {PG_SEAL_FUNCTION}() RETURNS trigger "
              f"LANGUAGE plpgsql AS $$ BEGIN IF {_is_seal(dialect)} THEN RETURN NEW; END IF; "
              f"RAISE EXCEPTION 'UPDATE on % refused: {MESSAGE}', TG_TABLE_NAME "
              "USING ERRCODE = 'restrict_violation'; END $$")
        refuse = (f"CREATE OR REPLACE FUNCTION {PG_FUNCTION}() RETURNS trigger LANGUAGE plpgsql "
                  "AS $$ BEGIN RAISE EXCEPTION '% on % refused: the table is append-only', "
                  "TG_OP, TG_TABLE_NAME USING ERRCODE = 'restrict_violation'; END $$")
        return [fn, refuse,
                f"CREATE TRIGGER {UPDATE_TRIGGER} BEFORE UPDATE ON {TABLE} FOR EACH ROW "
                f"EXECUTE FUNCTION {PG_SEAL_FUNCTION}()",
                f"CREATE TRIGGER {DELETE_TRIGGER} BEFORE DELETE ON {TABLE} FOR EACH ROW "
                f"EXECUTE FUNCTION {PG_FUNCTION}()"]
    if dialect == "sqlite":
        return [f"CREATE TRIGGER {UPDATE_TRIGGER} BEFORE UPDATE ON {TABLE} "
                f"WHEN NOT ({_is_seal(dialect)}) BEGIN "
                f"SELECT RAISE(ABORT, 'UPDATE on {TABLE} refused: {MESSAGE}'); END",
                f"CREATE TRIGGER {DELETE_TRIGGER} BEFORE DELETE ON {TABLE} BEGIN "
                f"SELECT RAISE(ABORT, 'DELETE on {TABLE} refused: the table is append-only'); "
                "END"]
    raise ValueError(f"append-only triggers are not implemented for {dialect}")


def drop_seal_once_ddl(dialect: str) -> list[str]:
    on = f" ON {TABLE}" if dialect == "postgresql" else ""
    return [f"DROP TRIGGER IF EXISTS {name}{on}" for name in (UPDATE_TRIGGER, DELETE_TRIGGER)]
