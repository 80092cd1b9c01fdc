"""FastAPI dependencies shared by every route."""

from __future__ import annotations

import functools
import inspect
from collections.abc import AsyncIterator, Callable
from contextvars import ContextVar
from typing import Annotated, Any

import anyio
import anyio.to_thread
from fastapi import Depends, Request
from fastapi.routing import APIRoute
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
    """One of the app's request slots, for a route that uses the database without a request
    transaction (/readyz)."""
    slots: RequestSlots = request.app.state.request_slots
    async with slots.slot():
        yield


DatabaseSlot = Depends(_database_slot, scope="function")


async def _session(request: Request) -> AsyncIterator[Session]:
    """One transaction per request, ended before the response is sent: read-only for safe
    methods, a write transaction otherwise. It holds one of the app's request slots
    (aicloud.api.server) until it has ended; none free within the pool timeout is a 503.

    Opened in the event loop (a session takes its connection at its first statement, so
    this does no I/O and costs no worker-thread hop). A read-only transaction is ended by
    the endpoint's own worker thread as it returns (RequestRoute); anything else is
    committed or rolled back here in a worker thread, shielded so a client that disconnects
    cannot leave the connection checked out."""
    ctx: AppContext = request.app.state.context
    slots: RequestSlots = request.app.state.request_slots
    read_only = request.method in SAFE_METHODS
    async with slots.slot():
        session = ctx.db.session(read_only=read_only)
        session.begin()
        token = _READ_TRANSACTION.set(session if read_only else None)
        try:
            yield session
        except BaseException:
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(session.close)  # close() rolls back
            raise
        finally:
            _READ_TRANSACTION.reset(token)
        if not session.in_transaction():
            session.close()  # ended in the endpoint's thread: its connection is back in the pool
            return
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(_commit_and_close, session)


def _commit_and_close(session: Session) -> None:
    try:
        session.commit()
    finally:
        session.close()


# The request's read-only transaction while its endpoint runs (set by _session, ended by
# RequestRoute in the endpoint's worker thread); None in a write request.
_READ_TRANSACTION: ContextVar[Session | None] = ContextVar("aicloud_read_transaction",
                                                          default=None)


def _ending_read_transaction(endpoint: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(endpoint)
    def run(*args: Any, **kwargs: Any) -> Any:
        result = endpoint(*args, **kwargs)
        session = _READ_TRANSACTION.get()
        if session is not None and session.in_transaction():
            session.commit()  # a read-only transaction: nothing to write, only to end
        return result
    return run


class RequestRoute(APIRoute):
    """The route class of every router: a plain (sync) endpoint ends its request's
    read-only transaction in its own worker thread as it returns, rather than _session
    taking another hop between the event loop and a worker thread after the response is
    built to do it (a COMMIT is I/O: a round trip on PostgreSQL). A hop is two thread
    wake-ups, which cost a GET about as much as one of its queries.

    Nothing was written, so ending the transaction before the response is validated changes
    nothing a client sees; should validating read more, that read opens a new read-only
    transaction, which _session ends. A write transaction still commits after the response
    is built and validated, so a response that fails validation rolls the write back."""

    def __init__(self, path: str, endpoint: Callable[..., Any], **kwargs: Any) -> None:
        if not (inspect.iscoroutinefunction(endpoint) or inspect.isgeneratorfunction(endpoint)
                or inspect.isasyncgenfunction(endpoint)):
            endpoint = _ending_read_transaction(endpoint)
        super().__init__(path, endpoint, **kwargs)


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
