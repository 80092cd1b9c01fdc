"""Liveness, readiness and metrics."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel
from sqlalchemy.exc import TimeoutError as PoolTimeout

from aicloud.api.authz import PUBLIC
from aicloud.api.deps import Context, DatabaseSlot, RequestRoute
from aicloud.shared.db import migrate
from aicloud.shared.errors import NotFound, ServiceUnavailable, Unauthenticated
from aicloud.shared.security import constant_time_equals

router = APIRouter(tags=["health"], route_class=RequestRoute)


class Health(BaseModel):
    status: str
    version: str
    profile: str


class Readiness(BaseModel):
    status: str
    database: str
    migrations: str


@router.get("/healthz", response_model=Health, dependencies=[PUBLIC])
def healthz(request: Request, ctx: Context) -> Health:
    """The process is alive (does not touch the database)."""
    return Health(status="ok", version=request.app.version, profile=ctx.settings.profile)


@router.get("/readyz", response_model=Readiness, dependencies=[PUBLIC, DatabaseSlot],
            responses={503: {"description": "Not ready"}})
def readyz(ctx: Context) -> Readiness:
    """Ready to serve: the database answers and its schema is at the code's revision."""
    try:
        ctx.db.ping()
    except PoolTimeout:
        raise  # busy, not broken: 503 overloaded with Retry-After (problems.py)
    except Exception as exc:
        raise ServiceUnavailable(f"database is unreachable: {type(exc).__name__}") from exc
    if not migrate.is_up_to_date(ctx.db):
        raise ServiceUnavailable("database schema is not at head; run `aicloud db upgrade`")
    return Readiness(status="ready", database=ctx.db.dialect, migrations="head")


def _operator_only(request: Request, ctx: Context) -> None:
    """/metrics is for the operators' scraper, not for users: unless the profile makes it
    public it needs the metrics token (a separate secret, not a user's session), and without a
    configured token it is not served at all."""
    settings = ctx.settings
    if settings.metrics_public:
        return
    if settings.metrics_token is None:
        raise NotFound("not found")
    scheme, _, value = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not constant_time_equals(
            value.strip(), settings.metrics_token.get_secret_value()):
        raise Unauthenticated("send the metrics token as a bearer token")


@router.get("/metrics", response_class=Response, dependencies=[PUBLIC, Depends(_operator_only)],
            responses={200: {"content": {CONTENT_TYPE_LATEST: {}}}})
def metrics(request: Request) -> Response:
    """Prometheus text format."""
    return Response(generate_latest(request.app.state.metrics_registry),
                    media_type=CONTENT_TYPE_LATEST)
