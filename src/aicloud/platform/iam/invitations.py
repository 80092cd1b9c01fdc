"""Membership invitations: an admin invites an email with a role at a scope; accepting
creates the account when needed (or proves the existing one's password) and binds the role."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from aicloud.platform import audit
from aicloud.platform.iam.authorize import Principal
from aicloud.platform.iam.bindings import create_binding
from aicloud.platform.iam.deletion_guards import lock_org_tree
from aicloud.platform.iam.grants import require_can_grant_role
from aicloud.platform.iam.hierarchy import scope_path
from aicloud.platform.iam.models import InvitationModel, RoleBindingModel
from aicloud.platform.iam.roles import get_role, role_org
from aicloud.platform.iam.schemas import (
    Invitation,
    InvitationAccept,
    InvitationCreate,
    InvitationCreated,
    RoleBindingCreate,
    User,
)
from aicloud.shared import security
from aicloud.shared.clock import utcnow
from aicloud.shared.errors import NotFound, Unauthenticated, ValidationFailed
from aicloud.shared.ids import new_id

INVITATION_PREFIX = "aicinv"
INVITATION_LIFETIME = timedelta(days=7)


def invitation_model_to_invitation(m: InvitationModel) -> Invitation:
    return Invitation(id=m.id, org_id=m.org_id, scope_id=m.scope_id, email=m.email,
                      role_id=m.role_id, expires_at=m.expires_at, accepted_at=m.accepted_at,
                      revoked_at=m.revoked_at, created_at=m.created_at)


def create_invitation(session: Session, scope_id: str, body: InvitationCreate, *,
                      actor: audit.Actor, grantor: Principal | None) -> InvitationCreated:
    """An invitation carries a role: ``grantor`` must hold every permission of it at the
    scope, as for a binding (accepting later binds it without another check)."""
    from aicloud.platform.iam.service import normalize_email

    org_id = scope_path(session, scope_id).split("/")[1]
    if not org_id:
        raise ValidationFailed("invitations are made to an organization, department or project")
    lock_org_tree(session, org_id)  # ordered with a concurrent delete of the scope
    path = scope_path(session, scope_id)  # still there under the lock
    get_role(session, body.role_id)
    if role_org(session, body.role_id) not in (None, org_id):
        raise NotFound(f"role {body.role_id} not found")
    require_can_grant_role(session, grantor, body.role_id, scope_id, "this invitation")
    token = security.new_token(INVITATION_PREFIX)
    now = utcnow()
    m = InvitationModel(id=new_id("inv"), org_id=org_id, scope_id=scope_id,
                        email=normalize_email(body.email), role_id=body.role_id,
                        token_hash=security.token_digest(token),
                        expires_at=now + INVITATION_LIFETIME, created_at=now)
    session.add(m)
    session.flush()
    audit.record(session, actor=actor, action="iam.invitation.create", target_type="invitation",
                 target_id=m.id, scope_path=path,
                 changes=audit.diff(None, {"email": m.email, "role_id": m.role_id}))
    return InvitationCreated(**invitation_model_to_invitation(m).model_dump(), token=token)


def get_invitation_model(session: Session, invitation_id: str) -> InvitationModel:
    m = session.get(InvitationModel, invitation_id)
    if m is None:
        raise NotFound(f"invitation {invitation_id} not found")
    return m


def revoke_invitation(session: Session, invitation_id: str, *, actor: audit.Actor) -> None:
    m = get_invitation_model(session, invitation_id)
    if m.revoked_at is None and m.accepted_at is None:
        m.revoked_at = utcnow()
        audit.record(session, actor=actor, action="iam.invitation.revoke",
                     target_type="invitation", target_id=m.id,
                     scope_path=scope_path(session, m.scope_id),
                     changes=audit.diff({"revoked": False}, {"revoked": True}))


def list_invitations(session: Session, scope_id: str, *, after: str | None,
                     limit: int) -> list[Invitation]:
    stmt = (select(InvitationModel).where(InvitationModel.scope_id == scope_id)
            .order_by(InvitationModel.id).limit(limit))
    if after:
        stmt = stmt.where(InvitationModel.id > after)
    return [invitation_model_to_invitation(m) for m in session.scalars(stmt)]


def accept_invitation(session: Session, body: InvitationAccept) -> User:
    from aicloud.platform.iam.principals import user_model_to_user
    from aicloud.platform.iam.service import create_user, get_user_by_email

    m = session.scalar(select(InvitationModel).where(
        InvitationModel.token_hash == security.token_digest(body.token)))
    if (m is None or m.revoked_at is not None or m.accepted_at is not None
            or m.expires_at <= utcnow()):
        raise Unauthenticated("the invitation is not valid or has expired")
    user = get_user_by_email(session, m.email)
    if user is None:
        user = create_user(session, email=m.email, display_name=body.display_name,
                           password=body.password)
    elif not security.verify_password(user.password_hash, body.password) or user.disabled:
        raise Unauthenticated("the invitation is not valid or the password is incorrect")
    actor = audit.Actor(id=user.id)
    if not session.scalar(select(RoleBindingModel.id).where(
            RoleBindingModel.principal_id == user.id, RoleBindingModel.role_id == m.role_id,
            RoleBindingModel.scope_id == m.scope_id)):
        # grantor=None: the inviter's right to grant the role was checked at invitation.
        create_binding(session, m.scope_id,
                       RoleBindingCreate(principal_id=user.id, role_id=m.role_id), actor=actor,
                       grantor=None)
    m.accepted_at, m.accepted_by = utcnow(), user.id
    audit.record(session, actor=actor, action="iam.invitation.accept", target_type="invitation",
                 target_id=m.id, scope_path=scope_path(session, m.scope_id),
                 changes=audit.diff({"accepted": False}, {"accepted": True}))
    return user_model_to_user(user)
