"""Login, logout and the caller's identity."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from aicloud.api.authz import PUBLIC, Authenticated
from aicloud.api.deps import SESSION_COOKIE, Context, RequestRoute
from aicloud.platform import iam
from aicloud.shared.errors import AppError

router = APIRouter(prefix="/auth", tags=["auth"], route_class=RequestRoute)


@router.post("/login", response_model=iam.LoginResponse, dependencies=[PUBLIC])
def login(body: iam.LoginRequest, request: Request, response: Response,
          ctx: Context) -> iam.LoginResponse:
    """Exchange email and password for a session token (also set as an HttpOnly cookie).
    Repeated failures for an email lock it for a while (429)."""
    # Its own transactions, committed before a failure is raised (the failure count must
    # survive the 401 it causes), with the password hash checked outside them. No request
    # slot (aicloud.api.server): each transaction holds a connection within one worker
    # thread, from the pool's reserve, and a burst of logins must not queue behind its
    # own password hashing.
    result = iam.attempt_login_outside_transaction(
        ctx.db, email=body.email, password=body.password,
        ip=request.client.host if request.client else None,
        user_agent=request.headers.get("user-agent"),
    )
    if isinstance(result, AppError):
        raise result
    response.set_cookie(
        SESSION_COOKIE, result.token, httponly=True, samesite="lax",
        # Secure whenever the login itself came over HTTPS, not only when the profile says so.
        secure=ctx.settings.cookie_secure or request.url.scheme == "https",
        expires=result.expires_at,
    )
    return result


@router.post("/logout", status_code=204)
def logout(caller: Authenticated, response: Response) -> Response:
    """Revoke the current session."""
    iam.logout(caller.session, caller.principal)
    response.delete_cookie(SESSION_COOKIE)
    response.status_code = 204
    return response


@router.get("/me", response_model=iam.User | iam.ServiceAccount)
def me(caller: Authenticated) -> iam.User | iam.ServiceAccount:
    """Who the token belongs to (a user, or the service account of an API key)."""
    if caller.principal.kind == "service_account":
        return iam.sa_model_to_sa(iam.get_service_account_model(caller.session, caller.id))
    return iam.get_user(caller.session, caller.id)
