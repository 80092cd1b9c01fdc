"""IAM operations: the only writer of the IAM tables."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from aicloud.platform.iam.models import AuthSessionModel, UserModel
from aicloud.platform.iam.schemas import BootstrapResult, LoginResponse, User
from aicloud.shared import security
from aicloud.shared.clock import utcnow
from aicloud.shared.errors import Conflict, Unauthenticated, ValidationFailed
from aicloud.shared.ids import new_id

SESSION_TOKEN_PREFIX = "aics"
SESSION_LIFETIME = timedelta(hours=12)
MIN_PASSWORD_LENGTH = 12


@dataclass(frozen=True)
class Principal:
    """Who is calling: resolved once per request from a session token (or later an API key)."""

    id: str
    kind: str  # "user"
    email: str
    session_id: str | None = None


def normalize_email(email: str) -> str:
    email = email.strip().lower()
    if "@" not in email or email.startswith("@") or email.endswith("@") or " " in email:
        raise ValidationFailed("email is not a valid address", field="email")
    return email


def user_model_to_user(model: UserModel) -> User:
    return User(
        id=model.id,
        email=model.email,
        display_name=model.display_name,
        disabled=model.disabled,
        created_at=model.created_at,
    )


def count_users(session: Session) -> int:
    return session.scalar(select(func.count()).select_from(UserModel)) or 0


def get_user_by_email(session: Session, email: str) -> UserModel | None:
    return session.scalar(select(UserModel).where(UserModel.email == normalize_email(email)))


def create_user(
    session: Session, *, email: str, display_name: str | None = None, password: str | None = None
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
    return user


def bootstrap_admin(
    session: Session, *, email: str, password: str | None = None
) -> BootstrapResult:
    """Create the first administrator. The generated password is returned once, never stored."""
    existing = get_user_by_email(session, email)
    if existing is not None:
        return BootstrapResult(user=user_model_to_user(existing), created=False)
    generated = password is None
    password = password or security.new_password()
    user = create_user(session, email=email, display_name="Bootstrap admin", password=password)
    return BootstrapResult(
        user=user_model_to_user(user), password=password if generated else None, created=True
    )


def login(
    session: Session,
    *,
    email: str,
    password: str,
    ip: str | None = None,
    user_agent: str | None = None,
    now: datetime | None = None,
) -> LoginResponse:
    now = now or utcnow()
    try:
        user = get_user_by_email(session, email)
    except ValidationFailed:
        user = None
    # verify_password runs even for unknown users so timing does not reveal who exists.
    ok = security.verify_password(user.password_hash if user else None, password)
    if not ok or user is None or user.disabled:
        raise Unauthenticated("email or password is incorrect")
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
    return LoginResponse(token=token, expires_at=record.expires_at, user=user_model_to_user(user))


def resolve_token(session: Session, token: str, *, now: datetime | None = None) -> Principal:
    now = now or utcnow()
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


def get_user(session: Session, user_id: str) -> User:
    model = session.get(UserModel, user_id)
    if model is None:
        raise Unauthenticated()
    return user_model_to_user(model)
