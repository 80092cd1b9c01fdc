"""Audit: events are recorded unsealed and chained by a single sealer.

``seq``, ``prev_hash`` and ``hash`` become NULL until the sealer sets them (once: the update
trigger now allows exactly that); ``position`` orders events by recording (a sequence on
PostgreSQL, max + 1 under SQLite's write lock) and a partial index finds the unsealed ones.
Existing events keep their seq as their position.

Revision ID: audit_0004
Revises: audit_0003
Create Date: 2026-12-02
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from aicloud.platform.audit.seal_once import drop_seal_once_ddl, seal_once_ddl
from aicloud.shared.db.append_only import append_only_ddl, drop_append_only_ddl

revision: str = "audit_0004"
down_revision: str | Sequence[str] | None = "audit_0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TABLE = "audit_events"
POSITION_SEQUENCE = "audit_events_position_seq"
CHAIN = ("seq", "prev_hash", "hash")


def _nullable(nullable: bool) -> None:
    types = {"seq": sa.BigInteger(), "prev_hash": sa.String(64), "hash": sa.String(64)}
    if op.get_bind().dialect.name == "postgresql":
        for col in CHAIN:
            op.alter_column(TABLE, col, existing_type=types[col], nullable=nullable)
        return
    # SQLite cannot relax NOT NULL in place: the batch copies the table (indexes are
    # recreated from reflection; the triggers are not, and are put back by the caller).
    with op.batch_alter_table(TABLE, recreate="always") as batch:
        for col in CHAIN:
            batch.alter_column(col, existing_type=types[col], nullable=nullable)


def upgrade() -> None:
    dialect = op.get_bind().dialect.name
    for sql in drop_append_only_ddl(dialect, TABLE):
        op.execute(sql)
    op.add_column(TABLE, sa.Column("position", sa.BigInteger(), nullable=True))
    _nullable(True)
    op.execute(f"UPDATE {TABLE} SET position = seq")
    if dialect == "postgresql":
        op.execute(f"CREATE SEQUENCE {POSITION_SEQUENCE} AS BIGINT OWNED BY {TABLE}.position")
        op.execute(f"SELECT setval('{POSITION_SEQUENCE}', COALESCE(MAX(position), 0) + 1, false)"
                   f" FROM {TABLE}")
        op.alter_column(TABLE, "position", existing_type=sa.BigInteger(), nullable=False)
    else:
        with op.batch_alter_table(TABLE, recreate="always") as batch:
            batch.alter_column("position", existing_type=sa.BigInteger(), nullable=False)
    op.create_index("ix_audit_events_position", TABLE, ["position"], unique=True)
    # The sealer's work list: small, because events stay in it for about a second.
    op.create_index("ix_audit_events_unsealed", TABLE, ["position"],
                    sqlite_where=sa.text("seq IS NULL"), postgresql_where=sa.text("seq IS NULL"))
    for sql in seal_once_ddl(dialect):
        op.execute(sql)


def downgrade() -> None:
    dialect = op.get_bind().dialect.name
    # Unsealed events have no place in the old schema: seal them first (`aicloud audit seal`).
    for sql in drop_seal_once_ddl(dialect):
        op.execute(sql)
    op.drop_index("ix_audit_events_unsealed", table_name=TABLE)
    op.drop_index("ix_audit_events_position", table_name=TABLE)
    if dialect == "postgresql":
        op.drop_column(TABLE, "position")
        _nullable(False)
    else:
        with op.batch_alter_table(TABLE, recreate="always") as batch:
            batch.drop_column("position")
            for col, type_ in (("seq", sa.BigInteger()), ("prev_hash", sa.String(64)),
                               ("hash", sa.String(64))):
                batch.alter_column(col, existing_type=type_, nullable=False)
    for sql in append_only_ddl(dialect, TABLE):
        op.execute(sql)
