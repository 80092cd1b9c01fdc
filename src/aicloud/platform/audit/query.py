"""Reading the audit log: filtered, cursor-paginated lists and a streaming JSON Lines export.

Authorization is the caller's: it passes ``allowed_scopes``, the scope prefixes the reader
may see (None = everything, [] = nothing), and every query is confined to them.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from sqlalchemy import ColumnElement, Select, false, or_, select, true
from sqlalchemy.orm import Session

from aicloud.platform.audit.chain import canonical_json
from aicloud.platform.audit.models import AuditEventModel
from aicloud.platform.audit.schemas import AuditEvent, event_model_to_event
from aicloud.shared.db import Database
from aicloud.shared.errors import ValidationFailed
from aicloud.shared.pagination import (
    DEFAULT_LIMIT,
    Page,
    check_limit,
    decode_cursor,
    encode_cursor,
)

E = AuditEventModel


@dataclass(frozen=True)
class EventFilter:
    """``scope``: events at or below this scope path. ``action``: exact, or a prefix when it
    ends in ``*`` (``iam.user.*``). ``since`` inclusive, ``until`` exclusive."""

    scope: str | None = None
    actor_id: str | None = None
    action: str | None = None
    since: datetime | None = None
    until: datetime | None = None

    def __post_init__(self) -> None:
        if self.scope is not None and not self.scope.startswith("/"):
            raise ValidationFailed("scope must be a path starting with '/'", scope=self.scope)
        for name in ("since", "until"):
            value = getattr(self, name)
            if value is not None and value.tzinfo is None:
                raise ValidationFailed(f"{name} must include a time zone", **{name: str(value)})
        if self.since and self.until and self.since >= self.until:
            raise ValidationFailed("since must be before until")


def _below(prefix: str) -> ColumnElement[bool]:
    """The scope itself and everything below it ("/org_a" matches "/org_a/prj_b", not
    "/org_ab"); autoescape because ids contain '_', a LIKE wildcard."""
    prefix = prefix.rstrip("/")
    if not prefix:
        return true()
    return or_(E.scope_path == prefix, E.scope_path.startswith(prefix + "/", autoescape=True))


def _filtered(stmt: Select[Any], allowed_scopes: Sequence[str] | None,
              f: EventFilter) -> Select[Any]:
    if allowed_scopes is not None:
        stmt = stmt.where(or_(*[_below(p) for p in allowed_scopes]) if allowed_scopes
                          else false())
    if f.scope is not None:
        stmt = stmt.where(_below(f.scope))
    if f.actor_id is not None:
        stmt = stmt.where(E.actor_id == f.actor_id)
    if f.action is not None:
        if f.action.endswith("*"):
            stmt = stmt.where(E.action.startswith(f.action[:-1], autoescape=True))
        else:
            stmt = stmt.where(E.action == f.action)
    if f.since is not None:
        stmt = stmt.where(E.occurred_at >= f.since)
    if f.until is not None:
        stmt = stmt.where(E.occurred_at < f.until)
    return stmt


def _cursor_seq(cursor: str) -> int:
    value = decode_cursor(cursor)
    if not value.isdigit():
        raise ValidationFailed("cursor is not valid; pass the next_cursor of a previous page")
    return int(value)


def list_events(
    session: Session,
    *,
    allowed_scopes: Sequence[str] | None,
    filter: EventFilter | None = None,
    limit: int = DEFAULT_LIMIT,
    cursor: str | None = None,
    order: Literal["asc", "desc"] = "desc",
) -> Page[AuditEvent]:
    """One page of events, newest first by default, paginated by recording order
    (``position``): an event is listed from its commit on, before the sealer gives it a seq,
    and a page boundary never moves when events are sealed."""
    check_limit(limit)
    stmt = _filtered(select(E), allowed_scopes, filter or EventFilter())
    if cursor:
        after = _cursor_seq(cursor)
        stmt = stmt.where(E.position < after if order == "desc" else E.position > after)
    stmt = stmt.order_by(E.position.desc() if order == "desc" else E.position).limit(limit + 1)
    rows = list(session.scalars(stmt))
    next_cursor = None
    if len(rows) > limit:
        rows = rows[:limit]
        next_cursor = encode_cursor(str(rows[-1].position))
    return Page[AuditEvent](items=[event_model_to_event(r) for r in rows],
                            next_cursor=next_cursor)


def iter_events(
    db: Database,
    *,
    allowed_scopes: Sequence[str] | None,
    filter: EventFilter | None = None,
    batch_size: int = 1000,
) -> Iterator[AuditEvent]:
    """Every matching event in recording order, fetched in batches, each in its own
    read-only transaction (on SQLite no write lock), so it can feed a streaming response
    after the request's transaction has ended. Unsealed events come with seq, prev_hash and
    hash null (sealed ones follow the chain's order, bar a commit the sealer saw late)."""
    table = E.__table__
    base = _filtered(select(table), allowed_scopes, filter or EventFilter())
    after = 0
    while True:
        with db.read_transaction() as s:
            rows = s.execute(base.where(table.c.position > after).order_by(table.c.position)
                             .limit(batch_size)).all()
        for row in rows:
            yield event_model_to_event(row)
        if len(rows) < batch_size:
            return
        after = rows[-1].position


def to_json_line(event: AuditEvent) -> str:
    """One JSON Lines record: canonical JSON of the event, newline-terminated."""
    return canonical_json(event.model_dump(mode="json")) + "\n"


def iter_jsonl(db: Database, *, allowed_scopes: Sequence[str] | None,
               filter: EventFilter | None = None) -> Iterator[str]:
    for event in iter_events(db, allowed_scopes=allowed_scopes, filter=filter):
        yield to_json_line(event)
