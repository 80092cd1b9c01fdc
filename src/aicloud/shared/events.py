"""A transactional outbox: publish events in the caller's transaction, consume with a cursor.

``publish(session, topic, payload)`` inserts a row in the same transaction as the change it
announces, so an event exists if and only if the change committed. Consumers ``read`` the
events after their durable cursor and ``ack`` the last one they handled, ideally in the
transaction that applies their effect (then each event is applied exactly once; otherwise
at least once).

Sequence numbers are assigned at insert but become visible at commit. On PostgreSQL,
publishers take a transaction-scoped advisory lock, so transactions that publish commit in
sequence order and a cursor never skips an event that commits late. SQLite serializes
writers already.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, Integer, String, Text, select, text
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Mapped, Session, mapped_column

from aicloud.shared.clock import utcnow
from aicloud.shared.db.base import Base, UTCDateTime
from aicloud.shared.ids import new_id

PUBLISH_LOCK = 0x6576_656E_7473  # "events"


class OutboxEventModel(Base):
    __tablename__ = "events_outbox"

    seq: Mapped[int] = mapped_column(BigInteger().with_variant(Integer(), "sqlite"),
                                     primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(40), unique=True)
    topic: Mapped[str] = mapped_column(String(128), index=True)
    payload: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class ConsumerCursorModel(Base):
    __tablename__ = "events_cursors"

    consumer: Mapped[str] = mapped_column(String(128), primary_key=True)
    position: Mapped[int] = mapped_column(BigInteger)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)


@dataclass(frozen=True)
class Event:
    seq: int
    id: str
    topic: str
    payload: dict[str, Any]
    created_at: datetime


def publish(session: Session, topic: str, payload: dict[str, Any]) -> str:
    """Queue an event in the caller's transaction; it is visible once that commits."""
    if not topic or len(topic) > 128:
        raise ValueError("topic must be 1-128 characters")
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": PUBLISH_LOCK})
    event_id = new_id("evt")
    session.add(OutboxEventModel(id=event_id, topic=topic,
                                 payload=json.dumps(payload, sort_keys=True, default=str),
                                 created_at=utcnow()))
    session.flush()
    return event_id


def position(session: Session, consumer: str) -> int:
    found = session.get(ConsumerCursorModel, consumer)
    return found.position if found else 0


def read(session: Session, consumer: str, *, topics: list[str] | None = None,
         limit: int = 100) -> list[Event]:
    """The events after ``consumer``'s cursor, oldest first."""
    stmt = (select(OutboxEventModel).where(OutboxEventModel.seq > position(session, consumer))
            .order_by(OutboxEventModel.seq).limit(limit))
    if topics:
        stmt = stmt.where(OutboxEventModel.topic.in_(topics))
    return [Event(m.seq, m.id, m.topic, json.loads(m.payload), m.created_at)
            for m in session.scalars(stmt)]


def ack(session: Session, consumer: str, seq: int) -> None:
    """Move ``consumer``'s cursor to ``seq`` (never backwards)."""
    insert = pg_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert
    stmt = insert(ConsumerCursorModel).values(consumer=consumer, position=seq,
                                              updated_at=utcnow())
    session.execute(stmt.on_conflict_do_update(
        index_elements=["consumer"],
        set_={"position": stmt.excluded.position, "updated_at": stmt.excluded.updated_at},
        where=ConsumerCursorModel.position < stmt.excluded.position))
