"""FastAPI dependencies shared by every route."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.orm import Session

from aicloud.api.server import RequestSlots
from aicloud.platform import audit, iam
from aicloud.runtime import AppContext

SESSION_COOKIE = "aicloud_session"


def get_context(request: Request) -> AppContext:
    return request.app.state.context


# Methods that must not change anything (RFC 9110 "safe"): their requests run in a read-only
# transaction, which on SQLite takes no write lock, and a write in one fails loudly.
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


async def _database_slot(request: Request) -> AsyncIterator[None]:
    """One of the app's request slots (aicloud.api.server), held until the request's
    transaction has ended; none free within the pool timeout is a 503."""
    slots: RequestSlots = request.app.state.request_slots
    async with slots.slot():
        yield


DatabaseSlot = Depends(_database_slot, scope="function")


def _session(request: Request, _slot: Annotated[None, DatabaseSlot]) -> Iterator[Session]:
    """One transaction per request, committed before the response is sent: read-only for
    safe methods, a write transaction otherwise."""
    ctx: AppContext = request.app.state.context
    session = ctx.db.session(read_only=request.method in SAFE_METHODS)
    try:
        with session.begin():
            yield session
    finally:
        session.close()


# scope="function": the transaction commits when the endpoint returns, before the response
# goes out, so a client never sees success for a write that then fails to commit.
DbSession = Annotated[Session, Depends(_session, scope="function")]
Context = Annotated[AppContext, Depends(get_context)]


def bearer_token(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    return request.cookies.get(SESSION_COOKIE)


def request_actor(request: Request, principal: iam.Principal) -> audit.Actor:
    """Who did it, for the audit log: the principal, the key it used, where from."""
    return audit.Actor(
        id=principal.id,
        kind=principal.kind,
        api_key_id=principal.api_key_id,
        ip=request.client.host if request.client else None,
        user_agent=request.headers.get("user-agent"),
        request_id=getattr(request.state, "request_id", None),
    )
