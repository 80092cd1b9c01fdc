"""API models of the audit log."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from pydantic import BaseModel

from aicloud.platform.audit.models import AuditEventModel


class AuditEvent(BaseModel):
    """One audit event with every field its hash commits to, so an exported event can be
    re-hashed by a third party (``changes`` and ``details`` in canonical JSON give back the
    stored text). ``seq``, ``prev_hash`` and ``hash`` are null until the sealer chains the
    event, normally within a second of its commit."""

    id: str
    seq: int | None
    occurred_at: datetime
    actor_id: str | None
    actor_kind: str
    api_key_id: str | None
    ip: str | None
    user_agent: str | None
    request_id: str | None
    action: str
    target_type: str
    target_id: str
    scope_path: str
    outcome: str
    changes: dict[str, Any]
    details: dict[str, Any]
    prev_hash: str | None
    hash: str | None


def event_model_to_event(m: AuditEventModel | Any) -> AuditEvent:
    """From an ORM object or a Core row with the same columns."""
    return AuditEvent(
        id=m.id, seq=m.seq, occurred_at=m.occurred_at, actor_id=m.actor_id,
        actor_kind=m.actor_kind, api_key_id=m.api_key_id, ip=m.ip, user_agent=m.user_agent,
        request_id=m.request_id, action=m.action, target_type=m.target_type,
        target_id=m.target_id, scope_path=m.scope_path, outcome=m.outcome,
        changes=json.loads(m.changes), details=json.loads(m.details), prev_hash=m.prev_hash,
        hash=m.hash)
