"""The hash chain: canonical JSON of each event, committed to the previous event's hash."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

GENESIS_HASH = "0" * 64

# The fields an event's hash commits to (the hash itself excluded). The id is included because
# other records cite audit events by id: an event whose id could be swapped undetected could
# be made to stand for another one.
HASHED_FIELDS = (
    "id", "seq", "occurred_at", "actor_id", "actor_kind", "api_key_id", "ip", "user_agent",
    "request_id", "action", "target_type", "target_id", "scope_path", "outcome", "changes",
    "details",
)


def canonical_json(value: Any) -> str:
    """Deterministic JSON: sorted keys, no spaces, UTF-8, datetimes as ISO 8601 UTC."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      default=_default)


def _default(value: Any) -> Any:
    if isinstance(value, datetime):
        return format_time(value)
    if isinstance(value, set | frozenset | tuple):
        return sorted(value) if isinstance(value, set | frozenset) else list(value)
    if hasattr(value, "model_dump"):
        return value.model_dump(mode="json")
    return str(value)


def format_time(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def event_hash(prev_hash: str, fields: Mapping[str, Any]) -> str:
    """SHA-256 of the previous hash followed by the canonical JSON of the hashed fields."""
    body = {k: fields[k] for k in HASHED_FIELDS}
    body["occurred_at"] = format_time(body["occurred_at"])
    return hashlib.sha256((prev_hash + canonical_json(body)).encode()).hexdigest()
