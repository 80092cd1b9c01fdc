"""Reading the audit log: each caller sees only the scopes where it holds the permission."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Query
from fastapi.responses import StreamingResponse

from aicloud.api.authz import Authenticated
from aicloud.api.deps import Context, RequestRoute
from aicloud.api.listing import DEFAULT, Cursor, Limit
from aicloud.platform import audit
from aicloud.shared.pagination import Page

router = APIRouter(prefix="/audit", tags=["audit"], route_class=RequestRoute)

Scope = Annotated[str | None, Query(description="Only events at or below this scope path, "
                                                "e.g. /org_…/prj_…")]
ActorQ = Annotated[str | None, Query(alias="actor", description="Principal id of the actor")]
ActionQ = Annotated[str | None, Query(description="Exact action, or a prefix ending in *")]
Since = Annotated[datetime | None, Query(description="From this time (inclusive, with zone)")]
Until = Annotated[datetime | None, Query(description="Until this time (exclusive, with zone)")]


def _filter(scope: str | None, actor: str | None, action: str | None, since: datetime | None,
            until: datetime | None) -> audit.EventFilter:
    return audit.EventFilter(scope=scope, actor_id=actor, action=action, since=since,
                             until=until)


@router.get("/events", response_model=Page[audit.AuditEvent])
def list_events(
    caller: Authenticated,
    scope: Scope = None,
    actor: ActorQ = None,
    action: ActionQ = None,
    since: Since = None,
    until: Until = None,
    order: Literal["asc", "desc"] = "desc",
    limit: Limit = DEFAULT,
    cursor: Cursor = None,
) -> Page[audit.AuditEvent]:
    """Audit events the caller may read (``audit.events.read``), newest first."""
    return audit.list_events(
        caller.session, allowed_scopes=caller.visible_scope_paths("audit.events.read"),
        filter=_filter(scope, actor, action, since, until), limit=limit, cursor=cursor,
        order=order,
    )


@router.get("/events/export", response_class=StreamingResponse,
            responses={200: {"content": {"application/x-ndjson": {}}}})
def export_events(
    caller: Authenticated,
    ctx: Context,
    scope: Scope = None,
    actor: ActorQ = None,
    action: ActionQ = None,
    since: Since = None,
    until: Until = None,
) -> StreamingResponse:
    """Stream the events the caller may export (``audit.events.export``) as JSON Lines, oldest
    first, each line carrying every field its hash commits to."""
    allowed = caller.visible_scope_paths("audit.events.export")
    lines = audit.iter_jsonl(ctx.db, allowed_scopes=allowed,
                             filter=_filter(scope, actor, action, since, until))
    return StreamingResponse(lines, media_type="application/x-ndjson",
                             headers={"Content-Disposition": 'attachment; filename="audit.jsonl"'})
