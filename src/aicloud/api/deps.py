"""FastAPI dependencies shared by every route."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

import anyio
import anyio.to_thread
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


async def _session(request: Request,
                   _slot: Annotated[None, DatabaseSlot]) -> AsyncIterator[Session]:
    """One transaction per request, committed before the response is sent: read-only for
    safe methods, a write transaction otherwise.

    Opened in the event loop (a session takes its connection at its first statement, so
    this does no I/O and costs no worker-thread hop); committed or rolled back in a worker
    thread, shielded so a client that disconnects cannot leave the connection checked out."""
    ctx: AppContext = request.app.state.context
    session = ctx.db.session(read_only=request.method in SAFE_METHODS)
    session.begin()
    try:
        yield session
    except BaseException:
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(session.close)  # close() rolls back
        raise
    with anyio.CancelScope(shield=True):
        await anyio.to_thread.run_sync(_commit_and_close, session)


def _commit_and_close(session: Session) -> None:
    try:
        session.commit()
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
