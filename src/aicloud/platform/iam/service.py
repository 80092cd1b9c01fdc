"""Accounts and login: users, sessions, throttling of failed logins, token resolution."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import bindparam, func, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from aicloud.platform import audit
from aicloud.platform.iam.apikeys import API_KEY_PREFIX, resolve_api_key
from aicloud.platform.iam.authorize import Principal
from aicloud.platform.iam.bindings import bind_platform_admin
from aicloud.platform.iam.last_used import CredentialUsage, is_due
from aicloud.platform.iam.models import AuthSessionModel, LoginThrottleModel, UserModel
from aicloud.platform.iam.principals import user_model_to_user
from aicloud.platform.iam.schemas import BootstrapResult, LoginResponse, User
from aicloud.shared import security
from aicloud.shared.clock import utcnow
from aicloud.shared.db import Database
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
# Per client address likewise after MAX_FAILURES_PER_ADDRESS failures, whatever the emails
# (password spraying: one password tried on many accounts).
MAX_FAILURES = 5
MAX_FAILURES_PER_ADDRESS = 20
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
    """Create the first administrator, bound to platform-admin on the platform (or make an
    existing account one, enabling it if it was disabled). The generated password is returned
    once, never stored."""
    existing = get_user_by_email(session, email)
    if existing is not None:
        # The way back in from the host: a disabled account is enabled again (its old
        # sessions and keys stay revoked; it logs in with its password).
        if existing.disabled:
            existing.disabled, existing.updated_at = False, utcnow()
            audit.record(session, actor=_SYSTEM, action="iam.user.update", target_type="user",
                         target_id=existing.id,
                         changes=audit.diff({"disabled": True}, {"disabled": False}))
        bind_platform_admin(session, existing.id, actor=_SYSTEM)
        return BootstrapResult(user=user_model_to_user(existing), created=False)
    generated = password is None
    password = password or security.new_password()
    user = create_user(session, email=email, display_name="Bootstrap admin", password=password)
    bind_platform_admin(session, user.id, actor=_SYSTEM)
    return BootstrapResult(
        user=user_model_to_user(user), password=password if generated else None, created=True
    )


def _email_throttle_key(email: str) -> str | None:
    """A valid address, lower-cased (None for a string that cannot be an address: no account
    can have it, and it must not collide with an address key)."""
    try:
        return normalize_email(email)[:320]
    except ValidationFailed:
        return None


def _address_throttle_key(ip: str | None) -> str | None:
    # The space keeps it apart from every email key (a valid email has none).
    return f"ip {ip}"[:320] if ip else None


def _throttle_rows(session: Session, keys: list[tuple[str, int]], now: datetime, *,
                   create: bool) -> list[tuple[LoginThrottleModel, int]]:
    """The throttle rows of these keys, row-locked in a fixed order (address, then email) so
    concurrent attempts queue on them and count exactly; expired windows start over."""
    insert = pg_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert
    rows: list[tuple[LoginThrottleModel, int]] = []
    for key, limit in keys:
        if create:  # insert-if-absent: two concurrent first failures must not collide
            session.execute(insert(LoginThrottleModel).values(
                key=key, failures=0, window_started_at=now).on_conflict_do_nothing())
        row = session.get(LoginThrottleModel, key, with_for_update=True,
                          populate_existing=True)
        if row is None:
            continue
        locked = row.locked_until is not None and row.locked_until > now
        if not locked and now - row.window_started_at > FAILURE_WINDOW:
            row.failures, row.window_started_at, row.locked_until = 0, now, None
        rows.append((row, limit))
    return rows


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
    ``session``: the caller commits, then raises it (a raise would roll the count back).

    Failures are counted per email (MAX_FAILURES) and per client address
    (MAX_FAILURES_PER_ADDRESS, against password spraying across many emails); either lock
    refuses every attempt, right password or not, with 429 until it expires.
    (``attempt_login_outside_transaction`` is the same with the slow hash check outside any
    transaction, for the API.)"""
    user = get_user_by_email(session, email) if _email_throttle_key(email) else None
    stored = user.password_hash if user else None
    ok = security.verify_password(stored, password)
    return _settle_login(session, email=email, user_id=user.id if user else None,
                         stored_hash=stored, ok=ok, ip=ip, user_agent=user_agent, now=now)


def attempt_login_outside_transaction(
    db: Database, *, email: str, password: str, ip: str | None = None,
    user_agent: str | None = None,
) -> LoginResponse | AppError:
    """attempt_login() with the argon2 check (tens of milliseconds of CPU and memory) run
    between two short transactions, never inside one: on SQLite every transaction holds the
    database's write lock, so a burst of logins must not hold it while hashing. Each
    transaction is committed; a failure is returned, already counted."""
    with db.transaction() as session:
        user = get_user_by_email(session, email) if _email_throttle_key(email) else None
        user_id, stored = (user.id, user.password_hash) if user else (None, None)
    ok = security.verify_password(stored, password)
    with db.transaction() as session:
        return _settle_login(session, email=email, user_id=user_id, stored_hash=stored, ok=ok,
                             ip=ip, user_agent=user_agent, now=None)


def _settle_login(session: Session, *, email: str, user_id: str | None,
                  stored_hash: str | None, ok: bool, ip: str | None, user_agent: str | None,
                  now: datetime | None) -> LoginResponse | AppError:
    """Count (or clear) the attempt and issue the session: the throttle rows are row-locked
    here, after the password was checked, so the lock is held only for a few statements."""
    now = now or utcnow()
    email_key = _email_throttle_key(email)
    keys = [(k, limit) for k, limit in ((_address_throttle_key(ip), MAX_FAILURES_PER_ADDRESS),
                                        (email_key, MAX_FAILURES)) if k is not None]
    user = session.get(UserModel, user_id) if user_id else None
    # The hash checked must still be the account's (no password change in between).
    failed = (not ok or user is None or user.disabled or user.password_hash != stored_hash)
    rows = _throttle_rows(session, keys, now, create=failed)
    if any(r.locked_until is not None and r.locked_until > now for r, _ in rows):
        return TooManyRequests("too many failed logins; try again later")
    if failed:
        for row, limit in rows:
            row.failures += 1
            if row.failures >= limit:
                row.locked_until = now + LOCKOUT
        audit.record(session, actor=audit.Actor(id=None, kind="anonymous", ip=ip,
                                                user_agent=user_agent),
                     action="iam.session.create", target_type="login",
                     target_id=(email_key or keys[0][0]) if keys else "-",
                     outcome="denied",
                     details={"failures": {r.key: r.failures for r, _ in rows},
                              "locked": [r.key for r, _ in rows if r.locked_until]})
        return Unauthenticated(BAD_CREDENTIALS)
    assert user is not None
    for row, _ in rows:
        if row.key == email_key:  # a success clears the email's count, not the address's
            session.delete(row)
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


# One prepared statement (built once, compiled once): the session with its user's state.
_S, _SU = AuthSessionModel.__table__.c, UserModel.__table__.c  # tables: see apikeys.py
_SESSION_BY_DIGEST = (
    select(_S.id, _S.user_id, _S.expires_at, _S.revoked_at, _S.last_used_at, _SU.email,
           _SU.disabled)
    .select_from(AuthSessionModel.__table__)
    .join(UserModel.__table__, _SU.id == _S.user_id)
    .where(_S.token_hash == bindparam("digest")))


def resolve_token(session: Session, token: str, *, usage: CredentialUsage | None = None,
                  now: datetime | None = None) -> Principal:
    """A session token or an API key, as the principal it acts for. Only reads when given
    ``usage`` (the API's buffer of credential uses, see last_used.py); without it the use is
    recorded in ``session``'s transaction, which must then be a write transaction."""
    now = now or utcnow()
    if token.startswith(API_KEY_PREFIX + "_"):
        return resolve_api_key(session, token, now=now, usage=usage)
    if not token.startswith(SESSION_TOKEN_PREFIX + "_"):
        raise Unauthenticated("the token is not valid")
    row = session.execute(_SESSION_BY_DIGEST,
                          {"digest": security.token_digest(token)}).first()
    if row is None or row.revoked_at is not None or row.expires_at <= now or row.disabled:
        raise Unauthenticated("the token is not valid or has expired")
    if usage is not None:
        usage.note(AuthSessionModel, row.id, row.last_used_at, now)
    elif is_due(row.last_used_at, now):
        session.execute(update(AuthSessionModel).where(AuthSessionModel.id == row.id)
                        .values(last_used_at=now))
    return Principal(id=row.user_id, kind="user", email=row.email, session_id=row.id)


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
