"""Recording audit events in the transaction of the change they describe.

``record()`` queues an event on the session; just before the transaction commits, the queued
events are inserted, unsealed, in the same transaction: a change and its audit event commit
together or not at all. Events queued inside a savepoint that rolls back are dropped with it.

Writers never touch the chain head: a single sealer (aicloud.platform.audit.sealer) chains
committed events shortly after, so concurrent writers do not queue behind one lock.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, NamedTuple

from sqlalchemy import ColumnElement, Table, event, func, insert, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session, SessionTransaction

from aicloud.platform.audit.chain import GENESIS_HASH, canonical_json
from aicloud.platform.audit.models import AuditChainHeadModel, AuditEventModel
from aicloud.shared.clock import utcnow
from aicloud.shared.ids import new_id

OUTCOMES = ("success", "denied", "failure")
ACTOR_KINDS = ("user", "service_account", "system", "anonymous")
SECRET_MASK = "********"
_PENDING = "aicloud.audit.pending"
HEAD_ID = 1
POSITION_SEQUENCE = "audit_events_position_seq"
EVENTS: Table = AuditEventModel.__table__  # type: ignore[assignment]
HEAD: Table = AuditChainHeadModel.__table__  # type: ignore[assignment]


class AuditChainBroken(RuntimeError):
    """The chain cannot be appended to safely; an operator must look at it."""


@dataclass(frozen=True)
class Actor:
    """Who caused a change, as the audit log records it."""

    id: str | None
    kind: str = "user"
    api_key_id: str | None = None
    ip: str | None = None
    user_agent: str | None = None
    request_id: str | None = None

    @classmethod
    def system(cls, name: str) -> Actor:
        """A controller or operator command acting on its own authority."""
        return cls(id=f"system:{name}", kind="system")


@dataclass
class _Pending:
    model: AuditEventModel
    txn: SessionTransaction | None
    fields: dict[str, Any] = field(default_factory=dict)


def diff(
    old: Mapping[str, Any] | None,
    new: Mapping[str, Any] | None,
    *,
    secret_fields: Iterable[str] = (),
) -> dict[str, dict[str, Any]]:
    """Per-field ``{"old": .., "new": ..}`` for the fields that differ; secrets are masked."""
    old, new = old or {}, new or {}
    secrets = set(secret_fields)
    out: dict[str, dict[str, Any]] = {}
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if a == b:
            continue
        if key in secrets:
            a = SECRET_MASK if a is not None else None
            b = SECRET_MASK if b is not None else None
        out[key] = {"old": a, "new": b}
    return out


def record(
    session: Session,
    *,
    actor: Actor,
    action: str,
    target_type: str,
    target_id: str,
    scope_path: str = "/",
    changes: Mapping[str, Mapping[str, Any]] | None = None,
    outcome: str = "success",
    details: Mapping[str, Any] | None = None,
    occurred_at: datetime | None = None,
) -> AuditEventModel:
    """Queue an audit event; it is inserted when the transaction commits, and sealed into the
    chain by the sealer shortly after (``seal_pending``).

    The returned object carries the event's id; it is inserted with a Core statement and never
    attached to the session (its seq and hash are given later, in the database only)."""
    if outcome not in OUTCOMES:
        raise ValueError(f"outcome must be one of {OUTCOMES}")
    if actor.kind not in ACTOR_KINDS:
        raise ValueError(f"actor kind must be one of {ACTOR_KINDS}")
    if not action or not target_type or not target_id:
        raise ValueError("action, target_type and target_id are required")
    if not scope_path.startswith("/"):
        raise ValueError("scope_path must start with '/'")
    model = AuditEventModel(
        id=new_id("aud"),
        occurred_at=occurred_at or utcnow(),
        actor_id=actor.id,
        actor_kind=actor.kind,
        api_key_id=actor.api_key_id,
        ip=actor.ip,
        user_agent=(actor.user_agent or "")[:512] or None,
        request_id=actor.request_id,
        action=action,
        target_type=target_type,
        target_id=target_id,
        scope_path=scope_path,
        outcome=outcome,
        changes=canonical_json(dict(changes or {})),
        details=canonical_json(dict(details or {})),
    )
    if not session.in_transaction():
        # Tie the event to a transaction now, so a rollback before the first query still
        # drops it (autobegin would only start one at the first statement).
        session.begin()
    txn = session.get_nested_transaction() or session.get_transaction()
    session.info.setdefault(_PENDING, []).append(_Pending(model, txn))
    return model


def pending_count(session: Session) -> int:
    return len(session.info.get(_PENDING, []))


def _is_within(txn: SessionTransaction | None, ancestor: SessionTransaction) -> bool:
    while txn is not None:
        if txn is ancestor:
            return True
        txn = txn.parent
    return False


@event.listens_for(Session, "after_soft_rollback")
def _drop_rolled_back(session: Session, previous_transaction: SessionTransaction) -> None:
    pending: list[_Pending] = session.info.get(_PENDING, [])
    if pending:
        session.info[_PENDING] = [
            p for p in pending if not _is_within(p.txn, previous_transaction)
        ]


@event.listens_for(Session, "before_commit")
def _insert_pending(session: Session) -> None:
    write_pending(session)


def write_pending(session: Session) -> int:
    """Insert the events queued on ``session``, unsealed (normally at commit)."""
    pending: list[_Pending] = session.info.pop(_PENDING, [])
    if not pending:
        return 0
    rows = [event_fields(p.model) for p in pending]
    for row in rows:
        del row["seq"]
    # Core executemany, not the unit of work: cheaper, and the models stay detached.
    session.execute(insert(EVENTS).values(position=_next_position(session)), rows)
    return len(rows)


def _next_position(session: Session) -> ColumnElement[int]:
    """The recording order: a sequence on PostgreSQL (no lock between writers); max + 1 on
    SQLite, whose writers are already serialized (BEGIN IMMEDIATE), evaluated per row."""
    if session.get_bind().dialect.name == "postgresql":
        return func.nextval(POSITION_SEQUENCE)
    return select(func.coalesce(func.max(EVENTS.c.position), 0) + 1).scalar_subquery()


class ChainHead(NamedTuple):
    seq: int
    hash: str


def lock_head(session: Session) -> ChainHead:
    """The chain head, locked until the transaction ends: only the sealer (and a checkpoint,
    which seals first) takes it, so sealers run one at a time across processes."""
    # Plain columns, never the ORM object: a session keeps loaded objects across commits
    # (expire_on_commit=False), and a stale head object would fork the chain.
    stmt = select(HEAD.c.seq, HEAD.c.hash).where(HEAD.c.id == HEAD_ID).with_for_update()
    head = session.execute(stmt).first()
    if head is None:
        # The migration seeds the row; an emptied database (tests, a restore) has none. Create
        # it at genesis, racing other sealers safely: the insert waits for a concurrent
        # creator and then does nothing. If this transaction did create it while sealed
        # events exist, the row was removed by hand: sealing would restart at seq 1, so refuse
        # (fail closed) rather than guess where the chain ends.
        dialect = session.get_bind().dialect.name
        upsert = pg_insert if dialect == "postgresql" else sqlite_insert
        created = session.execute(
            upsert(HEAD).values(id=HEAD_ID, seq=0, hash=GENESIS_HASH)
            .on_conflict_do_nothing(index_elements=["id"]).returning(HEAD.c.id)
        ).first()
        if created is not None and session.execute(
                select(EVENTS.c.seq).where(EVENTS.c.seq.is_not(None)).limit(1)).first():
            raise AuditChainBroken(
                "the audit chain head row is missing while sealed events exist; no event can "
                "be sealed until it is restored (run `aicloud audit verify`)")
        head = session.execute(stmt).one()
    return ChainHead(head.seq, head.hash)


def event_fields(m: AuditEventModel) -> dict[str, Any]:
    return {
        "id": m.id, "seq": m.seq, "occurred_at": m.occurred_at, "actor_id": m.actor_id,
        "actor_kind": m.actor_kind, "api_key_id": m.api_key_id, "ip": m.ip,
        "user_agent": m.user_agent, "request_id": m.request_id, "action": m.action,
        "target_type": m.target_type, "target_id": m.target_id, "scope_path": m.scope_path,
        "outcome": m.outcome, "changes": m.changes, "details": m.details,
    }
