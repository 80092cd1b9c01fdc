"""API endpoints: a project's resource published at ``/endpoints/{name}/``, and its keys.

Keys are ``aiep_`` + a random secret, shown once and stored as a SHA-256 digest (like IAM's
API keys), scoped to one endpoint, revocable. Every change is audited in its transaction.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from aicloud.platform import audit, iam
from aicloud.platform.access.models import EndpointKeyModel, EndpointModel, RateBucketModel
from aicloud.platform.access.resources import resolve_resource, resource_kind
from aicloud.platform.access.schemas import (
    Endpoint,
    EndpointCreate,
    EndpointKey,
    EndpointKeyCreate,
    EndpointKeyCreated,
)
from aicloud.shared import security
from aicloud.shared.clock import utcnow
from aicloud.shared.errors import Conflict, NotFound, ValidationFailed
from aicloud.shared.ids import new_id

ENDPOINT_KEY_PREFIX = "aiep"
ENDPOINT_PATH = "/endpoints/"


def endpoint_view(m: EndpointModel) -> Endpoint:
    return Endpoint(id=m.id, name=m.name, project_id=m.project_id,
                    resource_type=m.resource_type, resource_id=m.resource_id,
                    path=f"{ENDPOINT_PATH}{m.name}/", created_by=m.created_by,
                    created_at=m.created_at)


def key_view(m: EndpointKeyModel) -> EndpointKey:
    return EndpointKey(id=m.id, endpoint_id=m.endpoint_id, name=m.name,
                       rate_limit_requests=m.rate_limit_requests,
                       rate_limit_window_seconds=m.rate_limit_window_seconds,
                       created_by=m.created_by, created_at=m.created_at,
                       revoked_at=m.revoked_at)


def get_endpoint_model(session: Session, endpoint_id: str) -> EndpointModel:
    m = session.get(EndpointModel, endpoint_id)
    if m is None:
        raise NotFound(f"endpoint {endpoint_id} not found")
    return m


def get_key_model(session: Session, key_id: str) -> EndpointKeyModel:
    m = session.get(EndpointKeyModel, key_id)
    if m is None:
        raise NotFound(f"endpoint key {key_id} not found")
    return m


def publish(session: Session, project_id: str, body: EndpointCreate, *,
            actor: audit.Actor) -> Endpoint:
    """Publish a resource of ``project_id``: one of another project is not found; only the
    kinds its product allows (GPUaaS: api-app) may be published; names are unique."""
    target = resolve_resource(session, body.resource_id)
    # Publishing creates something inside the org: ordered with project deletes and moves by
    # the org tree lock, so a delete never leaves a published endpoint behind (see
    # endpoints_under, the deletion guard).
    iam.lock_org_tree(session, target.org_id)
    target = resolve_resource(session, body.resource_id)  # read again under the lock
    if target.project_id != project_id:
        raise NotFound(f"resource {body.resource_id} not found in project {project_id}")
    allowed = resource_kind(body.resource_id).publishable
    if target.kind not in allowed:
        raise ValidationFailed(f"a {target.kind} {target.resource_type} cannot be published "
                               f"as an API endpoint (only: {', '.join(sorted(allowed))})",
                               field="resource_id")
    if session.scalar(select(EndpointModel.id).where(EndpointModel.name == body.name)):
        raise Conflict(f"an endpoint named {body.name} already exists", field="name")
    m = EndpointModel(id=new_id("aep"), name=body.name, org_id=target.org_id,
                      project_id=project_id, scope_path=target.scope_path,
                      resource_type=target.resource_type, resource_id=target.id,
                      created_by=actor.id or "", created_at=utcnow())
    try:
        with session.begin_nested():
            session.add(m)
            session.flush()
    except IntegrityError:  # a concurrent publish took the name
        raise Conflict(f"an endpoint named {body.name} already exists", field="name") from None
    audit.record(session, actor=actor, action="access.endpoint.publish", target_type="endpoint",
                 target_id=m.id, scope_path=m.scope_path,
                 changes=audit.diff(None, {"name": m.name, "resource_id": m.resource_id}))
    return endpoint_view(m)


def unpublish(session: Session, endpoint_id: str, *, actor: audit.Actor) -> None:
    """Remove the endpoint and its keys (the name becomes free)."""
    m = get_endpoint_model(session, endpoint_id)
    key_ids = list(session.scalars(select(EndpointKeyModel.id).where(
        EndpointKeyModel.endpoint_id == m.id)))
    if key_ids:
        session.execute(delete(RateBucketModel).where(RateBucketModel.key_id.in_(key_ids)))
        session.execute(delete(EndpointKeyModel).where(EndpointKeyModel.id.in_(key_ids)))
    session.delete(m)
    audit.record(session, actor=actor, action="access.endpoint.unpublish",
                 target_type="endpoint", target_id=m.id, scope_path=m.scope_path,
                 changes=audit.diff({"name": m.name, "resource_id": m.resource_id,
                                     "keys": len(key_ids)}, None))


def endpoints_under(session: Session, scope_path: str) -> list[EndpointModel]:
    """The endpoints published at or below ``scope_path``: IAM's deletion guard for access
    (a scope is not deleted or moved while it publishes something; unpublish first)."""
    prefix = scope_path.rstrip("/") + "/"
    return list(session.scalars(select(EndpointModel).where(
        (EndpointModel.scope_path == scope_path) | EndpointModel.scope_path.startswith(prefix))
        .order_by(EndpointModel.id)))


def list_endpoints(session: Session, project_id: str, *, after: str | None,
                   limit: int) -> list[Endpoint]:
    stmt = (select(EndpointModel).where(EndpointModel.project_id == project_id)
            .order_by(EndpointModel.id).limit(limit))
    if after:
        stmt = stmt.where(EndpointModel.id > after)
    return [endpoint_view(m) for m in session.scalars(stmt)]


def create_key(session: Session, endpoint_id: str, body: EndpointKeyCreate, *,
               actor: audit.Actor) -> EndpointKeyCreated:
    ep = get_endpoint_model(session, endpoint_id)
    secret = security.new_token(ENDPOINT_KEY_PREFIX)
    m = EndpointKeyModel(id=new_id("aepk"), endpoint_id=ep.id, name=body.name,
                         key_hash=security.token_digest(secret),
                         rate_limit_requests=body.rate_limit_requests,
                         rate_limit_window_seconds=body.rate_limit_window_seconds,
                         created_by=actor.id or "", created_at=utcnow())
    session.add(m)
    session.flush()
    audit.record(session, actor=actor, action="access.endpoint_key.create",
                 target_type="endpoint_key", target_id=m.id, scope_path=ep.scope_path,
                 changes=audit.diff(None, {"endpoint_id": ep.id, "name": m.name,
                                           "rate_limit_requests": m.rate_limit_requests,
                                           "rate_limit_window_seconds":
                                               m.rate_limit_window_seconds}))
    return EndpointKeyCreated(**key_view(m).model_dump(), secret=secret)


def revoke_key(session: Session, key_id: str, *, actor: audit.Actor) -> EndpointKey:
    m = get_key_model(session, key_id)
    if m.revoked_at is None:
        m.revoked_at = utcnow()
        ep = get_endpoint_model(session, m.endpoint_id)
        audit.record(session, actor=actor, action="access.endpoint_key.revoke",
                     target_type="endpoint_key", target_id=m.id, scope_path=ep.scope_path,
                     changes=audit.diff({"revoked": False}, {"revoked": True}))
    return key_view(m)


def list_keys(session: Session, endpoint_id: str, *, after: str | None,
              limit: int) -> list[EndpointKey]:
    stmt = (select(EndpointKeyModel).where(EndpointKeyModel.endpoint_id == endpoint_id)
            .order_by(EndpointKeyModel.id).limit(limit))
    if after:
        stmt = stmt.where(EndpointKeyModel.id > after)
    return [key_view(m) for m in session.scalars(stmt)]


# --- what the proxy's hot path reads (cached by the caller) ---------------------------------


@dataclass(frozen=True)
class KeyGrant:
    """A valid key of an endpoint, as the proxy needs it."""

    key_id: str
    endpoint_id: str
    created_by: str
    rate_limit_requests: int
    rate_limit_window_seconds: int


@dataclass(frozen=True)
class EndpointRoute:
    id: str
    name: str
    project_id: str
    scope_path: str
    resource_id: str


def key_grant(session: Session, secret: str) -> KeyGrant | None:
    """The key a secret is, if it is valid (not revoked); None otherwise."""
    if not secret.startswith(ENDPOINT_KEY_PREFIX + "_"):
        return None
    row = session.execute(select(
        EndpointKeyModel.id, EndpointKeyModel.endpoint_id, EndpointKeyModel.created_by,
        EndpointKeyModel.rate_limit_requests, EndpointKeyModel.rate_limit_window_seconds,
        EndpointKeyModel.revoked_at).where(
        EndpointKeyModel.key_hash == security.token_digest(secret))).first()
    if row is None or row.revoked_at is not None:
        return None
    return KeyGrant(key_id=row.id, endpoint_id=row.endpoint_id, created_by=row.created_by,
                    rate_limit_requests=row.rate_limit_requests,
                    rate_limit_window_seconds=row.rate_limit_window_seconds)


def endpoint_route(session: Session, name: str) -> EndpointRoute | None:
    m = session.scalar(select(EndpointModel).where(EndpointModel.name == name))
    if m is None:
        return None
    return EndpointRoute(id=m.id, name=m.name, project_id=m.project_id,
                         scope_path=m.scope_path, resource_id=m.resource_id)
