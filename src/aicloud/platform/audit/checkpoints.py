"""Signed checkpoints of the chain head.

A checkpoint is not itself audited: an event about it would move the head past the point it
signs, and the scheduled checkpointer would then never catch up.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from aicloud.platform.audit.chain import canonical_json, format_time
from aicloud.platform.audit.models import AuditCheckpointModel, AuditEventModel
from aicloud.platform.audit.service import lock_head
from aicloud.platform.audit.signing import SigningKey, signature_is_valid
from aicloud.shared.clock import utcnow
from aicloud.shared.ids import new_id

# Prefix of every signed message, so a checkpoint signature can never be replayed as a
# signature over anything else made with the same key.
MESSAGE_TAG = "aicloud.audit.checkpoint.v1\n"


@dataclass(frozen=True)
class Checkpoint:
    id: str
    seq: int
    head_hash: str
    event_count: int
    signed_at: datetime
    key_id: str
    signature: str

    @classmethod
    def of(cls, m: AuditCheckpointModel) -> Checkpoint:
        return cls(id=m.id, seq=m.seq, head_hash=m.head_hash, event_count=m.event_count,
                   signed_at=m.signed_at, key_id=m.key_id, signature=m.signature)

    def message(self) -> bytes:
        return checkpoint_message(self.id, self.seq, self.head_hash, self.event_count,
                                  self.signed_at, self.key_id)

    def to_dict(self) -> dict[str, object]:
        return {"id": self.id, "seq": self.seq, "head_hash": self.head_hash,
                "event_count": self.event_count, "signed_at": format_time(self.signed_at),
                "key_id": self.key_id, "signature": self.signature}


def checkpoint_message(id: str, seq: int, head_hash: str, event_count: int,
                       signed_at: datetime, key_id: str) -> bytes:
    """The exact bytes a checkpoint's signature covers (documented for third parties)."""
    body = {"id": id, "seq": seq, "head_hash": head_hash, "event_count": event_count,
            "signed_at": format_time(signed_at), "key_id": key_id}
    return (MESSAGE_TAG + canonical_json(body)).encode()


def create_checkpoint(session: Session, key: SigningKey, *, now: datetime | None = None,
                      only_if_advanced: bool = False) -> Checkpoint | None:
    """Sign the current head. None when the chain is empty, or (``only_if_advanced``) when
    the latest checkpoint already covers the head."""
    # The head lock keeps appenders out while the count is taken, so (seq, hash, count)
    # describe one state, and concurrent checkpointers sign one after the other.
    head = lock_head(session)
    if head.seq == 0:
        return None
    if only_if_advanced:
        latest = session.scalar(select(func.max(AuditCheckpointModel.seq)))
        if latest is not None and latest >= head.seq:
            return None
    count = session.scalar(
        select(func.count()).select_from(AuditEventModel).where(AuditEventModel.seq <= head.seq))
    m = AuditCheckpointModel(id=new_id("ackp"), seq=head.seq, head_hash=head.hash,
                             event_count=int(count or 0), signed_at=now or utcnow(),
                             key_id=key.key_id, signature="")
    m.signature = key.sign(Checkpoint.of(m).message())
    session.add(m)
    session.flush()
    return Checkpoint.of(m)


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
