"""FastAPI dependencies shared by every route."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.orm import Session

from aicloud.platform import audit, iam
from aicloud.runtime import AppContext
from aicloud.shared.errors import Unauthenticated

SESSION_COOKIE = "aicloud_session"


def get_context(request: Request) -> AppContext:
    return request.app.state.context


def _session(request: Request) -> Iterator[Session]:
    """One transaction per request, committed before the response is sent."""
    ctx: AppContext = request.app.state.context
    session = ctx.db.session()
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


def current_principal(request: Request, session: DbSession) -> iam.Principal:
    token = bearer_token(request)
    if not token:
        raise Unauthenticated("send a bearer token or log in")
    principal = iam.resolve_token(session, token)
    request.state.principal = principal
    return principal


CurrentPrincipal = Annotated[iam.Principal, Depends(current_principal)]


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
