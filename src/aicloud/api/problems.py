"""RFC 9457 problem responses for every error the API returns."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import TimeoutError as PoolTimeout
from starlette.exceptions import HTTPException as StarletteHTTPException

from aicloud.shared.errors import PROBLEM_TYPE_BASE, AppError, Overloaded
from aicloud.shared.logging import request_id_var

log = logging.getLogger(__name__)
PROBLEM_MEDIA_TYPE = "application/problem+json"

_HTTP_CODES = {
    400: "bad-request",
    401: "unauthenticated",
    403: "forbidden",
    404: "not-found",
    405: "method-not-allowed",
    406: "not-acceptable",
    409: "conflict",
    413: "payload-too-large",
    415: "unsupported-media-type",
    422: "validation-failed",
    429: "too-many-requests",
}


def problem(
    request: Request, *, status: int, code: str, title: str, detail: str | None = None,
    headers: dict[str, str] | None = None, **extra: Any,
) -> JSONResponse:
    request_id = request_id_var.get() or getattr(request.state, "request_id", None)
    body: dict[str, Any] = {
        "type": PROBLEM_TYPE_BASE + code,
        "title": title,
        "status": status,
        "detail": detail or title,
        "instance": request.url.path,
        "request_id": request_id,
    }
    body.update(extra)
    headers = dict(headers or {})
    if request_id:
        # 500s are answered outside the request-id middleware; name the id here too.
        headers.setdefault("x-request-id", request_id)
    return JSONResponse(body, status_code=status, media_type=PROBLEM_MEDIA_TYPE, headers=headers)


# An error's extra fields never replace the problem's own (a service raising
# Conflict(..., status="posted") once turned a 409 into a 500).
_RESERVED = frozenset({"type", "title", "status", "detail", "instance", "request_id", "code",
                       "headers"})


async def _app_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, AppError)
    headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else {}
    if isinstance(exc, Overloaded):
        headers["Retry-After"] = str(exc.retry_after_seconds)
    extra = {k: v for k, v in exc.extra.items() if k not in _RESERVED}
    return problem(request, status=exc.status, code=exc.code, title=exc.title, detail=exc.detail,
                   headers=headers, **extra)


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = [
        {"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")}
        for e in exc.errors()
    ]
    return problem(request, status=422, code="validation-failed", title="The request is not valid",
                   detail="; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in errors),
                   errors=errors)


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    code = _HTTP_CODES.get(exc.status_code, "http-error")
    title = code.replace("-", " ").capitalize()
    return problem(request, status=exc.status_code, code=code, title=title,
                   detail=str(exc.detail) if exc.detail else title,
                   headers=getattr(exc, "headers", None))


async def _pool_timeout(request: Request, exc: Exception) -> JSONResponse:
    # A path outside the request slots (aicloud.api.server) found the pool empty for
    # database_pool_timeout_seconds: the same 503 as a request that found no slot.
    log.warning("no database connection within the pool timeout on %s %s",
                request.method, request.url.path)
    return await _app_error(request, Overloaded(
        "no database connection is free; retry shortly", retry_after_seconds=1))


async def _unhandled(request: Request, exc: Exception) -> JSONResponse:
    # The client gets the request id only; the trace goes to the log under the same id.
    log.error("unhandled error on %s %s [request_id=%s]", request.method, request.url.path,
              getattr(request.state, "request_id", None), exc_info=exc)
    return problem(request, status=500, code="internal-error", title="Internal server error",
                   detail="An unexpected error occurred; quote the request_id when reporting it.")


def install_problem_handlers(app: FastAPI) -> None:
    app.add_exception_handler(AppError, _app_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(PoolTimeout, _pool_timeout)
    app.add_exception_handler(Exception, _unhandled)
