"""Signed checkpoints of the chain head, and of what other services contribute to them.

A checkpoint is not itself audited: an event about it would move the head past the point it
signs, and the scheduled checkpointer would then never catch up.

Other services add their own integrity state to the signed statement through a
``Contributor`` (the composition root wires the ledger's running digest in), so audit never
imports them. A contributor advances its state from the previous checkpoint's, so signing
costs what changed since then, not a scan of all history.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from aicloud.platform.audit.chain import canonical_json, format_time
from aicloud.platform.audit.models import AuditCheckpointModel, AuditEventModel
from aicloud.platform.audit.sealer import check_head_is_end, seal_in
from aicloud.platform.audit.service import AuditChainBroken, lock_head
from aicloud.platform.audit.signing import SigningKey, signature_is_valid
from aicloud.shared.clock import utcnow
from aicloud.shared.ids import new_id

# Prefix of every signed message, so a checkpoint signature can never be replayed as a
# signature over anything else made with the same key. v1: the audit head alone (checkpoints
# signed before anchoring); v2 adds the ordinal and the contributions.
MESSAGE_TAG = "aicloud.audit.checkpoint.v1\n"
MESSAGE_TAG_V2 = "aicloud.audit.checkpoint.v2\n"


@dataclass(frozen=True)
class Contributor:
    """Another service's state, signed into every checkpoint under ``name``.

    ``advance(session, previous)`` returns the state now, from ``previous`` (the state in
    the last checkpoint this key signed, or None: start from scratch). ``lock(session)``, when
    given, runs before the audit head is locked, to wait for that service's writers in flight
    (it must lock in the same order they do: their tables first, the audit head last)."""

    name: str
    advance: Callable[[Session, Mapping[str, Any] | None], dict[str, Any]]
    lock: Callable[[Session], None] | None = None


@dataclass(frozen=True)
class Checkpoint:
    id: str
    seq: int
    head_hash: str
    event_count: int
    signed_at: datetime
    key_id: str
    signature: str
    ordinal: int | None = None
    # None on a v1 checkpoint; {} when nothing was contributed.
    contributions: dict[str, Any] | None = field(default=None, compare=True)

    @classmethod
    def of(cls, m: AuditCheckpointModel | Any) -> Checkpoint:
        """From an ORM object or a Core row with the same columns."""
        return cls(id=m.id, seq=m.seq, head_hash=m.head_hash, event_count=m.event_count,
                   signed_at=m.signed_at, key_id=m.key_id, signature=m.signature,
                   ordinal=m.ordinal,
                   contributions=None if m.contributions is None else json.loads(m.contributions))

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Checkpoint:
        """The inverse of ``to_dict`` (a published file); KeyError/ValueError when malformed."""
        return cls(id=str(d["id"]), seq=int(d["seq"]), head_hash=str(d["head_hash"]),
                   event_count=int(d["event_count"]),
                   signed_at=datetime.fromisoformat(str(d["signed_at"]).replace("Z", "+00:00")),
                   key_id=str(d["key_id"]), signature=str(d["signature"]),
                   ordinal=None if d.get("ordinal") is None else int(d["ordinal"]),
                   contributions=d.get("contributions"))

    def message(self) -> bytes:
        if self.contributions is None:
            return checkpoint_message(self.id, self.seq, self.head_hash, self.event_count,
                                      self.signed_at, self.key_id)
        body = {"id": self.id, "seq": self.seq, "head_hash": self.head_hash,
                "event_count": self.event_count, "signed_at": format_time(self.signed_at),
                "key_id": self.key_id, "ordinal": self.ordinal,
                "contributions": self.contributions}
        return (MESSAGE_TAG_V2 + canonical_json(body)).encode()

    def to_dict(self) -> dict[str, object]:
        d: dict[str, object] = {
            "id": self.id, "seq": self.seq, "head_hash": self.head_hash,
            "event_count": self.event_count, "signed_at": format_time(self.signed_at),
            "key_id": self.key_id, "signature": self.signature}
        if self.contributions is not None:
            d["ordinal"] = self.ordinal
            d["contributions"] = self.contributions
        return d


def checkpoint_message(id: str, seq: int, head_hash: str, event_count: int,
                       signed_at: datetime, key_id: str) -> bytes:
    """The exact bytes a v1 checkpoint's signature covers (documented for third parties)."""
    body = {"id": id, "seq": seq, "head_hash": head_hash, "event_count": event_count,
            "signed_at": format_time(signed_at), "key_id": key_id}
    return (MESSAGE_TAG + canonical_json(body)).encode()


def create_checkpoint(session: Session, key: SigningKey, *, now: datetime | None = None,
                      only_if_advanced: bool = False,
                      contributors: Sequence[Contributor] = (),
                      extends: Checkpoint | None = None) -> Checkpoint | None:
    """Sign the current head and the contributors' state. None when the chain is empty, or
    (``only_if_advanced``) when the latest checkpoint already covers all of it.

    ``extends`` is the newest checkpoint published outside the database (already verified by
    the caller); without it, the newest one in the database. The new checkpoint must extend
    it: the key never signs a head row that is not the chain's end, nor a chain that no longer
    holds what the previous checkpoint signed (rolled back or rewritten). AuditChainBroken
    then, so the tamper is reported instead of vouched for."""
    for c in contributors:
        if c.lock is not None:
            c.lock(session)
    # The head lock keeps the sealer out while the count is taken, so (seq, hash, count)
    # describe one state, and concurrent checkpointers sign one after the other. Only sealed
    # events are signed: everything committed so far is sealed first, in this transaction.
    check_head_is_end(session, lock_head(session), "sign")
    head, _ = seal_in(session)
    if head.seq == 0:
        if extends is not None:
            raise AuditChainBroken(_refusal(extends, "the chain is empty"))
        return None
    latest = _latest_by_ordinal(session)
    for signed in {c.id: c for c in (extends, latest) if c is not None}.values():
        if signed.seq > head.seq or _hash_at(session, signed.seq) != signed.head_hash:
            raise AuditChainBroken(_refusal(signed, f"the chain now ends at {head.seq}"
                                            if signed.seq > head.seq else
                                            f"event {signed.seq} has another hash"))
    # Carry state forward only from a checkpoint known to be genuine: the published one (the
    # caller verified it) or one this key signed, whichever is newer (publication may lag).
    # Anything else is recomputed from scratch.
    mine = latest if latest is not None and signature_is_valid(
        key.public_key, latest.signature, latest.message()) else None
    previous = extends or latest
    if mine is not None and (extends is None or (mine.ordinal or 0) >= (extends.ordinal or 0)):
        previous = mine
    genuine = previous is not None and previous in (extends, mine)
    carried = (previous.contributions or {}) if previous is not None and genuine else {}
    contributions = {c.name: c.advance(session, carried.get(c.name)) for c in contributors}
    if only_if_advanced and previous is not None and previous.seq >= head.seq and (
            previous.contributions == contributions):
        return None
    count = session.scalar(
        select(func.count()).select_from(AuditEventModel).where(AuditEventModel.seq <= head.seq))
    # Numbers continue from the published one too: after a rollback that dropped checkpoints,
    # a new one never reuses a published number.
    ordinal = max(session.scalar(select(func.max(AuditCheckpointModel.ordinal))) or 0,
                  (extends.ordinal or 0) if extends else 0) + 1
    m = AuditCheckpointModel(id=new_id("ackp"), seq=head.seq, head_hash=head.hash,
                             event_count=int(count or 0), signed_at=now or utcnow(),
                             key_id=key.key_id, signature="", ordinal=ordinal,
                             contributions=canonical_json(contributions))
    m.signature = key.sign(Checkpoint.of(m).message())
    session.add(m)
    session.flush()
    return Checkpoint.of(m)


def _hash_at(session: Session, seq: int) -> str | None:
    return session.scalar(select(AuditEventModel.hash).where(AuditEventModel.seq == seq))


def _refusal(previous: Checkpoint, what: str) -> str:
    return (f"refusing to sign: checkpoint {previous.id} signed event {previous.seq} with hash "
            f"{previous.head_hash[:16]}…, but {what}: the audit log was rolled back or "
            "rewritten; run `aicloud audit verify --against` with the anchor sink")


def _latest_by_ordinal(session: Session) -> Checkpoint | None:
    m = session.scalars(select(AuditCheckpointModel).where(
        AuditCheckpointModel.ordinal.is_not(None))
        .order_by(AuditCheckpointModel.ordinal.desc()).limit(1)).first()
    return Checkpoint.of(m) if m else None


def checkpoint_problem(cp: Checkpoint, trusted: dict[str, Ed25519PublicKey]) -> str | None:
    """Why a checkpoint's signature cannot be trusted, or None when it verifies."""
    public = trusted.get(cp.key_id)
    if public is None:
        return (f"checkpoint {cp.id} (seq {cp.seq}) is signed by unknown key {cp.key_id}; "
                "it was not made by this deployment (or add the key to "
                "audit_trusted_public_keys)")
    if not signature_is_valid(public, cp.signature, cp.message()):
        return f"checkpoint {cp.id} (seq {cp.seq}) has an invalid signature: forged or edited"
    return None


def latest_checkpoint(session: Session) -> Checkpoint | None:
    m = session.scalars(select(AuditCheckpointModel)
                        .order_by(AuditCheckpointModel.seq.desc(),
                                  AuditCheckpointModel.signed_at.desc()).limit(1)).first()
    return Checkpoint.of(m) if m else None
