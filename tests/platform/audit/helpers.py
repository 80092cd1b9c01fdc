"""Seeding a chain, and an attacker with database rights for the tamper tests."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from aicloud.platform import audit
from aicloud.platform.audit.chain import GENESIS_HASH, event_hash
from aicloud.platform.audit.models import (
    AuditChainHeadModel,
    AuditCheckpointModel,
    AuditEventModel,
)
from aicloud.platform.audit.seal_once import drop_seal_once_ddl, seal_once_ddl
from aicloud.runtime import AppContext, build_context
from aicloud.shared.db import Database
from aicloud.shared.db.append_only import append_only_ddl, drop_append_only_ddl

KEY = audit.SigningKey.from_b64(base64.b64encode(bytes(range(32))).decode())
TRUSTED = {KEY.key_id: KEY.public_key}
EVENTS = AuditEventModel.__table__
CHECKPOINTS = AuditCheckpointModel.__table__
HEAD = AuditChainHeadModel.__table__
ACTOR = audit.Actor(id="user_admin", ip="10.0.0.1", user_agent="pytest", request_id="req_1")
APPEND_ONLY = ("audit_events", "audit_checkpoints")


def seed(db: Database, n: int, *, per_txn: int = 1, scope: str = "/org_a",
         seal: bool = True) -> list[str]:
    """Record ``n`` events through the service and (``seal``) seal them, as the sealer
    controller would a moment later; returns their ids in seq order."""
    ids: list[str] = []
    for start in range(0, n, per_txn):
        with db.transaction() as s:
            for i in range(start, min(n, start + per_txn)):
                m = audit.record(s, actor=ACTOR, action="test.thing.update",
                                 target_type="thing", target_id=f"t{i}", scope_path=scope,
                                 changes=audit.diff({"size": i}, {"size": i + 1}))
                ids.append(m.id)
    if seal:
        audit.seal_pending(db)
    return ids


def checkpoint(db: Database) -> audit.Checkpoint:
    with db.transaction() as s:
        cp = audit.create_checkpoint(s, KEY)
    assert cp is not None
    return cp


def verify(db: Database, **kw: Any) -> audit.VerifyResult:
    return audit.verify_chain(db, TRUSTED, **kw)  # type: ignore[arg-type]


def _triggers(dialect: str, table: str, drop: bool) -> list[str]:
    if table == "audit_events":  # append-only but for the one seal
        return drop_seal_once_ddl(dialect) if drop else seal_once_ddl(dialect)
    return drop_append_only_ddl(dialect, table) if drop else append_only_ddl(dialect, table)


@contextmanager
def attacker(db: Database, tables: tuple[str, ...] = APPEND_ONLY) -> Iterator[Connection]:
    """A connection of someone with full database rights: the append-only triggers are out
    of the way while the block runs, and put back afterwards (as a careful intruder would)."""
    with db.engine.begin() as conn:
        if db.dialect == "postgresql":
            for t in tables:
                conn.execute(sa.text(f"ALTER TABLE {t} DISABLE TRIGGER USER"))
        else:
            for t in tables:
                for sql in _triggers(db.dialect, t, drop=True):
                    conn.execute(sa.text(sql))
        yield conn
        if db.dialect == "postgresql":
            for t in tables:
                conn.execute(sa.text(f"ALTER TABLE {t} ENABLE TRIGGER USER"))
        else:
            for t in tables:
                for sql in _triggers(db.dialect, t, drop=False):
                    conn.execute(sa.text(sql))


def row(conn: Connection, seq: int) -> dict[str, Any]:
    return dict(conn.execute(sa.select(EVENTS).where(EVENTS.c.seq == seq)).one()._mapping)


def rehash(fields: dict[str, Any]) -> str:
    return event_hash(fields["prev_hash"], fields)


def wipe(db: Database) -> None:
    """Empty the chain (only an attacker can; used to rebuild between cases)."""
    with attacker(db) as conn:
        conn.execute(sa.delete(CHECKPOINTS))
        conn.execute(sa.delete(EVENTS))
        conn.execute(sa.update(HEAD).values(seq=0, hash=GENESIS_HASH))


def anchored_context(db: Database, sink_dir: Path) -> AppContext:
    """A deployment whose checkpoints sign with KEY and are published to ``sink_dir``."""
    from tests.conftest import make_settings

    settings = make_settings(db, audit_anchor_sink=f"dir:{sink_dir}",
                             audit_signing_key=base64.b64encode(bytes(range(32))).decode())
    return build_context(settings, db)


def published(sink_dir: Path) -> audit.Published:
    return audit.read_published(audit.open_sink(f"dir:{sink_dir}"), TRUSTED)


def verify_against(db: Database, sink_dir: Path) -> audit.VerifyResult:
    return audit.verify_chain(db, TRUSTED, published=published(sink_dir))
