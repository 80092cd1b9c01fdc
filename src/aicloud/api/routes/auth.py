"""Login, logout and the caller's identity."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from aicloud.api.deps import SESSION_COOKIE, Context, CurrentPrincipal, DbSession
from aicloud.platform import iam

router = APIRouter(prefix="/auth", tags=["auth"])


@router.post("/login", response_model=iam.LoginResponse)
def login(body: iam.LoginRequest, request: Request, response: Response, session: DbSession,
          ctx: Context) -> iam.LoginResponse:
    """Exchange email and password for a session token (also set as an HttpOnly cookie)."""
    result = iam.login(
        session, email=body.email, password=body.password,
        ip=request.client.host if request.client else None,
        user_agent=request.headers.get("user-agent"),
    )
    response.set_cookie(
        SESSION_COOKIE, result.token, httponly=True, samesite="lax",
        secure=ctx.settings.cookie_secure, expires=result.expires_at,
    )
    return result


@router.post("/logout", status_code=204)
def logout(principal: CurrentPrincipal, session: DbSession, response: Response) -> Response:
    """Revoke the current session."""
    iam.logout(session, principal)
    response.delete_cookie(SESSION_COOKIE)
    response.status_code = 204
    return response


@router.get("/me", response_model=iam.User)
def me(principal: CurrentPrincipal, session: DbSession) -> iam.User:
    """Who the token belongs to."""
    return iam.get_user(session, principal.id)
