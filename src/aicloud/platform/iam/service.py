"""Accounts and login: users, sessions, throttling of failed logins, token resolution."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from aicloud.platform import audit
from aicloud.platform.iam.apikeys import API_KEY_PREFIX, resolve_api_key
from aicloud.platform.iam.authorize import Principal
from aicloud.platform.iam.bindings import bind_platform_admin
from aicloud.platform.iam.models import AuthSessionModel, LoginThrottleModel, UserModel
from aicloud.platform.iam.principals import user_model_to_user
from aicloud.platform.iam.schemas import BootstrapResult, LoginResponse, User
from aicloud.shared import security
from aicloud.shared.clock import utcnow
from aicloud.shared.errors import (
    AppError,
    Conflict,
    TooManyRequests,
    Unauthenticated,
    ValidationFailed,
)
from aicloud.shared.ids import new_id

SESSION_TOKEN_PREFIX = "aics"
SESSION_LIFETIME = timedelta(hours=12)
MIN_PASSWORD_LENGTH = 12
# Failed logins per email: after MAX_FAILURES within FAILURE_WINDOW the email is locked for
# LOCKOUT, whether or not an account exists for it (so the lock reveals nothing either).
MAX_FAILURES = 5
FAILURE_WINDOW = timedelta(minutes=15)
LOCKOUT = timedelta(minutes=15)
_SYSTEM = audit.Actor.system("iam")
BAD_CREDENTIALS = "email or password is incorrect"


def normalize_email(email: str) -> str:
    email = email.strip().lower()
    if "@" not in email or email.startswith("@") or email.endswith("@") or " " in email:
        raise ValidationFailed("email is not a valid address", field="email")
    return email


def count_users(session: Session) -> int:
    return session.scalar(select(func.count()).select_from(UserModel)) or 0


def get_user_by_email(session: Session, email: str) -> UserModel | None:
    return session.scalar(select(UserModel).where(UserModel.email == normalize_email(email)))


def create_user(
    session: Session, *, email: str, display_name: str | None = None,
    password: str | None = None, actor: audit.Actor = _SYSTEM,
) -> UserModel:
    email = normalize_email(email)
    if password is not None and len(password) < MIN_PASSWORD_LENGTH:
        raise ValidationFailed(
            f"password must be at least {MIN_PASSWORD_LENGTH} characters", field="password"
        )
    if get_user_by_email(session, email) is not None:
        raise Conflict(f"a user with email {email} already exists", field="email")
    now = utcnow()
    user = UserModel(
        id=new_id("user"),
        email=email,
        display_name=display_name or email.split("@")[0],
        password_hash=security.hash_password(password) if password else None,
        disabled=False,
        created_at=now,
        updated_at=now,
    )
    session.add(user)
    session.flush()
    audit.record(session, actor=actor, action="iam.user.create", target_type="user",
                 target_id=user.id,
                 changes=audit.diff(None, {"email": email, "display_name": user.display_name,
                                           "password": password},
                                    secret_fields=("password",)))
    return user


def bootstrap_admin(
    session: Session, *, email: str, password: str | None = None
) -> BootstrapResult:
    """Create the first administrator, bound to platform-admin on the platform. The generated
    password is returned once, never stored."""
    existing = get_user_by_email(session, email)
    if existing is not None:
        bind_platform_admin(session, existing.id, actor=_SYSTEM)
        return BootstrapResult(user=user_model_to_user(existing), created=False)
    generated = password is None
    password = password or security.new_password()
    user = create_user(session, email=email, display_name="Bootstrap admin", password=password)
    bind_platform_admin(session, user.id, actor=_SYSTEM)
    return BootstrapResult(
        user=user_model_to_user(user), password=password if generated else None, created=True
    )


def _throttle_key(email: str) -> str:
    return email.strip().lower()[:320]


def _is_locked(session: Session, key: str, now: datetime) -> bool:
    row = session.get(LoginThrottleModel, key)
    return row is not None and row.locked_until is not None and row.locked_until > now


def _record_failure(session: Session, key: str, now: datetime, ip: str | None,
                    user_agent: str | None) -> None:
    # Insert-if-absent then lock: two concurrent first failures must not collide on the key.
    insert = pg_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert
    session.execute(insert(LoginThrottleModel).values(
        key=key, failures=0, window_started_at=now).on_conflict_do_nothing())
    row = session.get(LoginThrottleModel, key, with_for_update=True, populate_existing=True)
    assert row is not None
    if now - row.window_started_at > FAILURE_WINDOW:
        row.failures, row.window_started_at, row.locked_until = 0, now, None
    row.failures += 1
    if row.failures >= MAX_FAILURES:
        row.locked_until = now + LOCKOUT
    audit.record(session, actor=audit.Actor(id=None, kind="anonymous", ip=ip,
                                            user_agent=user_agent),
                 action="iam.session.create", target_type="login", target_id=key,
                 outcome="denied", details={"failures": row.failures,
                                            "locked": row.locked_until is not None})


def attempt_login(
    session: Session,
    *,
    email: str,
    password: str,
    ip: str | None = None,
    user_agent: str | None = None,
    now: datetime | None = None,
) -> LoginResponse | AppError:
    """Check a password. A failure is *returned*, not raised, with the failure counted in
    ``session``: the caller commits, then raises it (a raise would roll the count back)."""
    now = now or utcnow()
    key = _throttle_key(email)
    try:
        user = get_user_by_email(session, email)
    except ValidationFailed:
        user = None
    # verify_password runs even for unknown or locked users so timing does not reveal who
    # exists or who is locked.
    ok = security.verify_password(user.password_hash if user else None, password)
    if _is_locked(session, key, now):
        return TooManyRequests("too many failed logins for this email; try again later")
    if not ok or user is None or user.disabled:
        _record_failure(session, key, now, ip, user_agent)
        return Unauthenticated(BAD_CREDENTIALS)
    throttle = session.get(LoginThrottleModel, key)
    if throttle is not None:
        session.delete(throttle)
    token = security.new_token(SESSION_TOKEN_PREFIX)
    record = AuthSessionModel(
        id=new_id("sess"),
        user_id=user.id,
        token_hash=security.token_digest(token),
        created_at=now,
        expires_at=now + SESSION_LIFETIME,
        ip=ip,
        user_agent=(user_agent or "")[:512] or None,
    )
    session.add(record)
    session.flush()
    audit.record(session, actor=audit.Actor(id=user.id, ip=ip, user_agent=user_agent),
                 action="iam.session.create", target_type="session", target_id=record.id)
    return LoginResponse(token=token, expires_at=record.expires_at, user=user_model_to_user(user))


def login(session: Session, *, email: str, password: str, ip: str | None = None,
          user_agent: str | None = None, now: datetime | None = None) -> LoginResponse:
    """attempt_login() that raises on failure (for callers that need no throttling record)."""
    result = attempt_login(session, email=email, password=password, ip=ip,
                           user_agent=user_agent, now=now)
    if isinstance(result, AppError):
        raise result
    return result


def resolve_token(session: Session, token: str, *, now: datetime | None = None) -> Principal:
    """A session token or an API key, as the principal it acts for."""
    now = now or utcnow()
    if token.startswith(API_KEY_PREFIX + "_"):
        return resolve_api_key(session, token, now=now)
    if not token.startswith(SESSION_TOKEN_PREFIX + "_"):
        raise Unauthenticated("the token is not valid")
    record = session.scalar(
        select(AuthSessionModel).where(AuthSessionModel.token_hash == security.token_digest(token))
    )
    if record is None or record.revoked_at is not None or record.expires_at <= now:
        raise Unauthenticated("the token is not valid or has expired")
    user = session.get(UserModel, record.user_id)
    if user is None or user.disabled:
        raise Unauthenticated("the token is not valid or has expired")
    record.last_used_at = now
    return Principal(id=user.id, kind="user", email=user.email, session_id=record.id)


def logout(session: Session, principal: Principal) -> None:
    if principal.session_id:
        record = session.get(AuthSessionModel, principal.session_id)
        if record is not None and record.revoked_at is None:
            record.revoked_at = utcnow()
            audit.record(session, actor=audit.Actor(id=principal.id),
                         action="iam.session.revoke", target_type="session",
                         target_id=record.id)


def get_user(session: Session, user_id: str) -> User:
    from aicloud.platform.iam.principals import get_user_model

    return user_model_to_user(get_user_model(session, user_id))
