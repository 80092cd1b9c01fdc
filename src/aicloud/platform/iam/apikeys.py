"""API keys: ``aick_`` + a random secret shown once and stored as a SHA-256 digest.

A key acts as its principal (a user or a service account) and can be narrowed to one scope
and to a subset of permissions; narrowing only removes access, never adds any. A key never
makes a broader credential: it mints no key for its own principal, passes its narrowing on to
a service account's key it mints, and whoever mints a service account's key must hold all
the account's bindings.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import and_, bindparam, select, update
from sqlalchemy.orm import Session

from aicloud.platform import audit
from aicloud.platform.iam.authorize import Principal, policy_snapshot
from aicloud.platform.iam.grants import require_holds_bindings_of
from aicloud.platform.iam.hierarchy import scope_path
from aicloud.platform.iam.last_used import CredentialUsage, is_due
from aicloud.platform.iam.models import ApiKeyModel, ServiceAccountModel, UserModel
from aicloud.platform.iam.permissions import CATALOG
from aicloud.platform.iam.principals import (
    get_service_account_model,
    principal_kind,
    service_account_scope,
)
from aicloud.platform.iam.schemas import ApiKey, ApiKeyCreate, ApiKeyCreated
from aicloud.shared import security
from aicloud.shared.clock import utcnow
from aicloud.shared.errors import Forbidden, NotFound, Unauthenticated, ValidationFailed
from aicloud.shared.ids import new_id

API_KEY_PREFIX = "aick"


def key_model_to_key(m: ApiKeyModel) -> ApiKey:
    return ApiKey(id=m.id, principal_id=m.principal_id, principal_kind=m.principal_kind,
                  name=m.name, scope_id=m.scope_id, permissions=m.permissions,
                  expires_at=m.expires_at, last_used_at=m.last_used_at, revoked_at=m.revoked_at,
                  created_at=m.created_at)


def _narrow_like_grantor(session: Session, grantor: Principal, scope_id: str | None,
                         perms: list[str] | None) -> tuple[str | None, list[str] | None]:
    """A key never mints a credential broader than itself: the new key is narrowed at least
    as the calling key (its narrowing is inherited when none is asked for; asking for a wider
    scope or other permissions is a 403)."""
    if grantor.key_scope is not None:
        if scope_id is None:
            scope_id = grantor.key_scope
        else:
            path = policy_snapshot(session).path_of(scope_id) or ()
            if grantor.key_scope not in path:
                raise Forbidden("a key can only create keys inside its own scope "
                                f"({grantor.key_scope})")
    if grantor.key_permissions is not None:
        if perms is None:
            perms = sorted(grantor.key_permissions)
        else:
            wider = sorted(frozenset().union(*(CATALOG.expand(p) for p in perms))
                           - grantor.key_permissions)
            if wider:
                raise Forbidden("a key can only create keys within its own permissions; "
                                f"not among them: {', '.join(wider[:8])}")
    return scope_id, perms


def create_api_key(session: Session, principal_id: str, body: ApiKeyCreate, *,
                   actor: audit.Actor, grantor: Principal | None) -> ApiKeyCreated:
    """A key for a user (their own) or a service account. ``grantor`` (the caller) must hold
    everything the service account is bound to, and a calling key passes on its narrowing:
    no credential is ever broader than the one that made it."""
    kind = principal_kind(principal_id)
    if kind == "group":
        raise ValidationFailed("groups cannot own API keys", field="principal_id")
    if grantor is not None and grantor.api_key_id is not None and principal_id == grantor.id:
        raise Forbidden("an API key cannot mint API keys for its own principal; "
                        "log in with a password")
    path = "/"
    if kind == "service_account":
        sa = get_service_account_model(session, principal_id)
        path = scope_path(session, service_account_scope(sa))
        require_holds_bindings_of(session, grantor, principal_id,
                                  "a key for this service account")
    if body.scope_id is not None:
        scope_path(session, body.scope_id)  # must exist
    perms: list[str] | None = None
    if body.permissions is not None:
        for p in body.permissions:
            CATALOG.validate_pattern(p)
        perms = sorted(set(body.permissions))
    scope_id = body.scope_id
    if grantor is not None:
        scope_id, perms = _narrow_like_grantor(session, grantor, scope_id, perms)
    if body.expires_at is not None and body.expires_at <= utcnow():
        raise ValidationFailed("expires_at must be in the future", field="expires_at")
    secret = security.new_token(API_KEY_PREFIX)
    m = ApiKeyModel(id=new_id("key"), principal_id=principal_id, principal_kind=kind,
                    name=body.name, key_hash=security.token_digest(secret),
                    scope_id=scope_id, permissions=perms, expires_at=body.expires_at,
                    created_at=utcnow())
    session.add(m)
    session.flush()
    audit.record(session, actor=actor, action="iam.api_key.create", target_type="api_key",
                 target_id=m.id, scope_path=path,
                 changes=audit.diff(None, {"principal_id": principal_id, "name": m.name,
                                           "scope_id": m.scope_id, "permissions": perms}))
    return ApiKeyCreated(**key_model_to_key(m).model_dump(), secret=secret)


def get_api_key_model(session: Session, key_id: str) -> ApiKeyModel:
    m = session.get(ApiKeyModel, key_id)
    if m is None:
        raise NotFound(f"API key {key_id} not found")
    return m


def api_key_owner_scope(session: Session, m: ApiKeyModel) -> str | None:
    """The scope governing a service account's key (the platform for a platform service
    account; None for a user's own key)."""
    if m.principal_kind != "service_account":
        return None
    return service_account_scope(get_service_account_model(session, m.principal_id))


def revoke_api_key(session: Session, key_id: str, *, actor: audit.Actor) -> ApiKey:
    m = get_api_key_model(session, key_id)
    if m.revoked_at is None:
        m.revoked_at = utcnow()
        scope = api_key_owner_scope(session, m)
        audit.record(session, actor=actor, action="iam.api_key.revoke", target_type="api_key",
                     target_id=m.id, scope_path=scope_path(session, scope) if scope else "/",
                     changes=audit.diff({"revoked": False}, {"revoked": True}))
    return key_model_to_key(m)


def list_api_keys(session: Session, principal_ids: list[str], *, after: str | None,
                  limit: int) -> list[ApiKey]:
    stmt = (select(ApiKeyModel).where(ApiKeyModel.principal_id.in_(principal_ids))
            .order_by(ApiKeyModel.id).limit(limit))
    if after:
        stmt = stmt.where(ApiKeyModel.id > after)
    return [key_model_to_key(m) for m in session.scalars(stmt)]


# One prepared statement (built once, compiled once): the key with its principal's state.
# On the tables, not the mapped classes: a statement of ORM attributes goes through the ORM's
# compile and loading layers, which cost more than the indexed read itself.
_K, _U, _SA = ApiKeyModel.__table__.c, UserModel.__table__.c, ServiceAccountModel.__table__.c
_KEY_BY_DIGEST = (
    select(_K.id, _K.principal_id, _K.principal_kind, _K.scope_id, _K.permissions,
           _K.expires_at, _K.revoked_at, _K.last_used_at, _U.email,
           _U.disabled.label("user_disabled"), _SA.disabled.label("sa_disabled"))
    .select_from(ApiKeyModel.__table__)
    .outerjoin(UserModel.__table__, and_(_K.principal_kind == "user", _U.id == _K.principal_id))
    .outerjoin(ServiceAccountModel.__table__,
               and_(_K.principal_kind == "service_account", _SA.id == _K.principal_id))
    .where(_K.key_hash == bindparam("digest")))


def resolve_api_key(session: Session, secret: str, *, now: datetime,
                    usage: CredentialUsage | None = None) -> Principal:
    """The principal of an API key, in one indexed read. Its use is noted in ``usage``
    (written later, off the request path) or, without one, set in ``session``'s own (write)
    transaction."""
    # The digest is looked up by an index; comparing digests of high-entropy secrets leaks
    # nothing useful through timing.
    row = session.execute(_KEY_BY_DIGEST, {"digest": security.token_digest(secret)}).first()
    if row is None or row.revoked_at is not None or (row.expires_at and row.expires_at <= now):
        raise Unauthenticated("the token is not valid or has expired")
    disabled = row.user_disabled if row.principal_kind == "user" else row.sa_disabled
    if disabled is None or disabled:  # None: the principal is gone
        raise Unauthenticated("the token is not valid or has expired")
    if usage is not None:
        usage.note(ApiKeyModel, row.id, row.last_used_at, now)
    elif is_due(row.last_used_at, now):
        session.execute(update(ApiKeyModel).where(ApiKeyModel.id == row.id)
                        .values(last_used_at=now))
    perms: frozenset[str] | None = None
    if row.permissions is not None:
        perms = frozenset().union(*(CATALOG.expand(p) for p in row.permissions))
    return Principal(id=row.principal_id, kind=row.principal_kind,
                     email=row.email if row.principal_kind == "user" else None,
                     api_key_id=row.id, key_scope=row.scope_id, key_permissions=perms)
