"""Audit tables. Only aicloud.platform.audit writes them."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, Index, Integer, String, Text, text
from sqlalchemy.orm import Mapped, mapped_column

from aicloud.shared.db import Base, UTCDateTime


class AuditEventModel(Base):
    __tablename__ = "audit_events"

    __table_args__ = (
        Index("ix_audit_events_position", "position", unique=True),
        # The sealer's work list (see aicloud.platform.audit.sealer).
        Index("ix_audit_events_unsealed", "position", sqlite_where=text("seq IS NULL"),
              postgresql_where=text("seq IS NULL")),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    # Position in the hash chain: 1, 2, 3, ... with no gaps, given by the sealer. NULL until
    # the event is sealed (with prev_hash and hash); then set once (a trigger refuses more).
    seq: Mapped[int | None] = mapped_column(BigInteger, unique=True, nullable=True)
    # Recording order, given when the writer inserts the event (a PostgreSQL sequence, so
    # before commit: not the chain's order, which is the order the sealer sees commits in).
    # The sealer takes unsealed events in this order; lists paginate by it.
    position: Mapped[int] = mapped_column(BigInteger)
    occurred_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    actor_id: Mapped[str | None] = mapped_column(String(64), nullable=True, index=True)
    actor_kind: Mapped[str] = mapped_column(String(32))
    api_key_id: Mapped[str | None] = mapped_column(String(40), nullable=True)
    ip: Mapped[str | None] = mapped_column(String(64), nullable=True)
    user_agent: Mapped[str | None] = mapped_column(String(512), nullable=True)
    request_id: Mapped[str | None] = mapped_column(String(128), nullable=True)
    action: Mapped[str] = mapped_column(String(128), index=True)
    target_type: Mapped[str] = mapped_column(String(64))
    target_id: Mapped[str] = mapped_column(String(128), index=True)
    # "/org_x/dep_y/prj_z": prefix queries find everything below a scope.
    scope_path: Mapped[str] = mapped_column(String(512), index=True)
    outcome: Mapped[str] = mapped_column(String(16))
    changes: Mapped[str] = mapped_column(Text)  # canonical JSON {field: {"old": .., "new": ..}}
    details: Mapped[str] = mapped_column(Text)  # canonical JSON
    prev_hash: Mapped[str | None] = mapped_column(String(64), nullable=True)
    hash: Mapped[str | None] = mapped_column(String(64), nullable=True)


class AuditChainHeadModel(Base):
    """One row: the last sealed sequence number and hash. Only the sealer locks and moves it
    (writers never touch it), so there is one sealer at a time and the chain never forks."""

    __tablename__ = "audit_chain_head"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    seq: Mapped[int] = mapped_column(BigInteger)
    hash: Mapped[str] = mapped_column(String(64))


class AuditCheckpointModel(Base):
    """A signed statement "the chain had ``event_count`` events ending in ``head_hash`` at
    ``seq``". Events cannot be removed or rewritten below a checkpoint without it showing,
    even by someone who recomputes every hash, because only the key holder can sign."""

    __tablename__ = "audit_checkpoints"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    seq: Mapped[int] = mapped_column(BigInteger, index=True)
    head_hash: Mapped[str] = mapped_column(String(64))
    event_count: Mapped[int] = mapped_column(BigInteger)
    signed_at: Mapped[datetime] = mapped_column(UTCDateTime)
    # "ed25519:" + the first 32 hex digits of SHA-256 of the raw public key.
    key_id: Mapped[str] = mapped_column(String(80))
    signature: Mapped[str] = mapped_column(String(128))  # base64 Ed25519 signature
    # 1, 2, 3, ... in signing order (NULL on checkpoints signed before anchoring existed): a
    # gap shows a checkpoint dropped from the middle, and published files sort by it.
    ordinal: Mapped[int | None] = mapped_column(BigInteger, nullable=True, unique=True,
                                                index=True)
    # Canonical JSON of what other services contributed to the signed statement, e.g. the
    # ledger's running digest ({"ledger": {"transfers": .., "last_seq": .., "digest": ..}}).
    # NULL marks a v1 checkpoint (signed message without it).
    contributions: Mapped[str | None] = mapped_column(Text, nullable=True)
