"""Principals besides login: users' profile changes, service accounts and groups."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from aicloud.platform import audit
from aicloud.platform.iam.authorize import PLATFORM, Principal, policy_snapshot
from aicloud.platform.iam.deletion_guards import lock_org_tree
from aicloud.platform.iam.grants import require_holds_bindings_of
from aicloud.platform.iam.hierarchy import get_org_model, get_project_model, scope_path
from aicloud.platform.iam.models import (
    ApiKeyModel,
    AuthSessionModel,
    DenyBindingModel,
    GroupMemberModel,
    GroupModel,
    RoleBindingModel,
    ServiceAccountModel,
    UserModel,
)
from aicloud.platform.iam.policy_version import bump_policy_version
from aicloud.platform.iam.schemas import Group, ServiceAccount, User, UserUpdate
from aicloud.shared.clock import utcnow
from aicloud.shared.errors import Conflict, NotFound
from aicloud.shared.ids import id_prefix, new_id

PRINCIPAL_KINDS = {"user": "user", "sa": "service_account", "grp": "group"}


def principal_kind(principal_id: str) -> str:
    kind = PRINCIPAL_KINDS.get(id_prefix(principal_id) or "")
    if kind is None:
        raise NotFound(f"principal {principal_id} not found")
    return kind


# --- users -----------------------------------------------------------------------------------


def user_model_to_user(model: UserModel) -> User:
    return User(id=model.id, email=model.email, display_name=model.display_name,
                disabled=model.disabled, created_at=model.created_at)


def get_user_model(session: Session, user_id: str) -> UserModel:
    m = session.get(UserModel, user_id)
    if m is None:
        raise NotFound(f"user {user_id} not found")
    return m


def platform_admins(session: Session) -> set[str]:
    """Enabled users bound to platform-admin at the platform."""
    return set(session.scalars(select(RoleBindingModel.principal_id).join(
        UserModel, UserModel.id == RoleBindingModel.principal_id).where(
        RoleBindingModel.role_id == "platform-admin", RoleBindingModel.scope_id == PLATFORM,
        UserModel.disabled.is_(False))))


def require_another_platform_admin(session: Session, user_id: str) -> None:
    """409 when ``user_id`` is the last enabled platform administrator: nobody could then
    administer the platform (bootstrap-admin on the host would be the only way back)."""
    # The policy-version UPDATE row-locks on PostgreSQL (and SQLite's write transactions are
    # serial), so two administrators removing each other at once cannot both pass the count.
    bump_policy_version(session)
    if platform_admins(session) <= {user_id}:
        raise Conflict("this is the last platform administrator; make another one first")


def _revoke_credentials(session: Session, user_id: str) -> tuple[int, int]:
    """Revoke every live session and API key of a user: re-enabling them later must not
    bring back what was issued before (a stolen token stays dead)."""
    now = utcnow()
    sessions = session.execute(update(AuthSessionModel).where(
        AuthSessionModel.user_id == user_id, AuthSessionModel.revoked_at.is_(None))
        .values(revoked_at=now)).rowcount  # type: ignore[attr-defined]
    keys = session.execute(update(ApiKeyModel).where(
        ApiKeyModel.principal_id == user_id, ApiKeyModel.revoked_at.is_(None))
        .values(revoked_at=now)).rowcount  # type: ignore[attr-defined]
    return sessions, keys


def update_user(session: Session, user_id: str, body: UserUpdate, *,
                actor: audit.Actor) -> User:
    """Rename or disable/enable a user. Disabling revokes all their sessions and API keys
    (enabling revives none) and is refused for the last platform administrator."""
    m = get_user_model(session, user_id)
    old = {"display_name": m.display_name, "disabled": m.disabled}
    details = None
    if body.display_name is not None:
        m.display_name = body.display_name
    if body.disabled and not m.disabled:
        require_another_platform_admin(session, m.id)
        sessions, keys = _revoke_credentials(session, m.id)
        details = {"revoked_sessions": sessions, "revoked_api_keys": keys}
    if body.disabled is not None:
        m.disabled = body.disabled
    m.updated_at = utcnow()
    audit.record(session, actor=actor, action="iam.user.update", target_type="user",
                 target_id=m.id, changes=audit.diff(old, {"display_name": m.display_name,
                                                          "disabled": m.disabled}),
                 details=details)
    return user_model_to_user(m)


def list_users(session: Session, ids: Sequence[str] | None, *, after: str | None,
               limit: int) -> list[User]:
    """Users by id order; ``ids`` restricts to those (None: everyone)."""
    stmt = select(UserModel).order_by(UserModel.id).limit(limit)
    if ids is not None:
        stmt = stmt.where(UserModel.id.in_(list(ids)))
    if after:
        stmt = stmt.where(UserModel.id > after)
    return [user_model_to_user(m) for m in session.scalars(stmt)]


def users_of_orgs(session: Session, org_ids: Sequence[str]) -> set[str]:
    """Users that belong to these organizations: bound somewhere in them or in their groups."""
    if not org_ids:
        return set()
    bound = session.scalars(select(RoleBindingModel.principal_id).where(
        RoleBindingModel.org_id.in_(list(org_ids)),
        RoleBindingModel.principal_id.like("user\\_%", escape="\\")))
    grouped = session.scalars(select(GroupMemberModel.user_id).join(
        GroupModel, GroupModel.id == GroupMemberModel.group_id).where(
        GroupModel.org_id.in_(list(org_ids))))
    return set(bound) | set(grouped)


def require_user_known_to(session: Session, viewer: Principal | None, user_id: str,
                          org_id: str | None) -> None:
    """404 unless the user exists and ``viewer`` may know it: a member of ``org_id`` (bound
    in it or in one of its groups), or any user for readers of all users and the system
    (None). Tenants reach users of elsewhere only through invitations."""
    get_user_model(session, user_id)
    if viewer is None or policy_snapshot(session).can(viewer, "iam.users.read", PLATFORM):
        return
    if org_id is None or user_id not in users_of_orgs(session, [org_id]):
        raise NotFound(f"user {user_id} not found")


# --- service accounts ------------------------------------------------------------------------


def sa_model_to_sa(m: ServiceAccountModel) -> ServiceAccount:
    return ServiceAccount(id=m.id, org_id=m.org_id, project_id=m.project_id, name=m.name,
                          disabled=m.disabled, created_at=m.created_at)


def get_service_account_model(session: Session, sa_id: str) -> ServiceAccountModel:
    m = session.get(ServiceAccountModel, sa_id)
    if m is None:
        raise NotFound(f"service account {sa_id} not found")
    return m


def service_account_scope(m: ServiceAccountModel) -> str:
    """The scope that owns (and governs) a service account: its project, its organization,
    or the platform."""
    return m.project_id or m.org_id or PLATFORM


def create_service_account(session: Session, owner_scope_id: str, name: str, *,
                           actor: audit.Actor) -> ServiceAccount:
    """Owned by an organization, by a project, or by the platform (``owner_scope_id`` =
    ``PLATFORM``: a product's own account, which can be bound only at the platform)."""
    org_id: str | None
    if owner_scope_id == PLATFORM:
        org_id, project_id = None, None
    elif id_prefix(owner_scope_id) == "prj":
        # Under the org tree lock, so a concurrent delete of the project or org either sees
        # this account or this sees the owner gone (404), never a foreign-key error.
        lock_org_tree(session, get_project_model(session, owner_scope_id).org_id)
        org_id, project_id = get_project_model(session, owner_scope_id).org_id, owner_scope_id
    else:
        lock_org_tree(session, owner_scope_id)
        org_id, project_id = get_org_model(session, owner_scope_id).id, None
    m = ServiceAccountModel(id=new_id("sa"), org_id=org_id, project_id=project_id, name=name,
                            disabled=False, created_at=utcnow())
    session.add(m)
    session.flush()
    bump_policy_version(session)
    audit.record(session, actor=actor, action="iam.service_account.create",
                 target_type="service_account", target_id=m.id,
                 scope_path=scope_path(session, owner_scope_id),
                 changes=audit.diff(None, {"name": name}))
    return sa_model_to_sa(m)


def set_service_account_disabled(session: Session, sa_id: str, disabled: bool, *,
                                 actor: audit.Actor, grantor: Principal | None) -> ServiceAccount:
    """A disabled service account's API keys stop working at once; re-enabling revives them,
    so it is granting the account's bindings again: ``grantor`` must hold each of them."""
    m = get_service_account_model(session, sa_id)
    if m.disabled and not disabled:
        require_holds_bindings_of(session, grantor, sa_id, "re-enabling this service account")
    if m.disabled != disabled:
        audit.record(session, actor=actor, action="iam.service_account.update",
                     target_type="service_account", target_id=m.id,
                     scope_path=scope_path(session, service_account_scope(m)),
                     changes=audit.diff({"disabled": m.disabled}, {"disabled": disabled}))
        m.disabled = disabled
    return sa_model_to_sa(m)


def delete_service_account(session: Session, sa_id: str, *, actor: audit.Actor) -> None:
    m = get_service_account_model(session, sa_id)
    path = scope_path(session, service_account_scope(m))
    _delete_principal_bindings(session, sa_id)
    session.execute(delete(ApiKeyModel).where(ApiKeyModel.principal_id == sa_id))
    session.delete(m)
    bump_policy_version(session)
    audit.record(session, actor=actor, action="iam.service_account.delete",
                 target_type="service_account", target_id=sa_id, scope_path=path,
                 changes=audit.diff({"name": m.name}, None))


def list_service_accounts(session: Session, *, scope_ids: Sequence[str], after: str | None,
                          limit: int) -> list[ServiceAccount]:
    """Service accounts owned by any of these scopes (organizations, projects, and the
    platform's own when ``PLATFORM`` is among them)."""
    ids = list(scope_ids)
    owned = (ServiceAccountModel.project_id.in_(ids)) | (
        ServiceAccountModel.project_id.is_(None) & ServiceAccountModel.org_id.in_(ids))
    if PLATFORM in ids:
        owned = owned | ServiceAccountModel.org_id.is_(None)
    stmt = select(ServiceAccountModel).where(owned).order_by(ServiceAccountModel.id).limit(limit)
    if after:
        stmt = stmt.where(ServiceAccountModel.id > after)
    return [sa_model_to_sa(m) for m in session.scalars(stmt)]


def _delete_principal_bindings(session: Session, principal_id: str) -> None:
    for model in (RoleBindingModel, DenyBindingModel):
        session.execute(delete(model).where(model.principal_id == principal_id))


# --- groups ----------------------------------------------------------------------------------


def group_model_to_group(m: GroupModel) -> Group:
    return Group(id=m.id, org_id=m.org_id, name=m.name, created_at=m.created_at)


def get_group_model(session: Session, group_id: str) -> GroupModel:
    m = session.get(GroupModel, group_id)
    if m is None:
        raise NotFound(f"group {group_id} not found")
    return m


def create_group(session: Session, org_id: str, name: str, *, actor: audit.Actor) -> Group:
    lock_org_tree(session, org_id)  # ordered with a concurrent delete_org (see above)
    get_org_model(session, org_id)
    if session.scalar(select(GroupModel.id).where(GroupModel.org_id == org_id,
                                                  GroupModel.name == name)):
        raise Conflict(f"a group named {name} already exists", field="name")
    m = GroupModel(id=new_id("grp"), org_id=org_id, name=name, created_at=utcnow())
    session.add(m)
    session.flush()
    bump_policy_version(session)
    audit.record(session, actor=actor, action="iam.group.create", target_type="group",
                 target_id=m.id, scope_path=f"/{org_id}", changes=audit.diff(None, {"name": name}))
    return group_model_to_group(m)


def delete_group(session: Session, group_id: str, *, actor: audit.Actor) -> None:
    m = get_group_model(session, group_id)
    _delete_principal_bindings(session, group_id)
    session.execute(delete(GroupMemberModel).where(GroupMemberModel.group_id == group_id))
    session.delete(m)
    bump_policy_version(session)
    audit.record(session, actor=actor, action="iam.group.delete", target_type="group",
                 target_id=group_id, scope_path=f"/{m.org_id}",
                 changes=audit.diff({"name": m.name}, None))


def list_groups(session: Session, org_id: str, *, after: str | None,
                limit: int) -> list[Group]:
    stmt = (select(GroupModel).where(GroupModel.org_id == org_id).order_by(GroupModel.id)
            .limit(limit))
    if after:
        stmt = stmt.where(GroupModel.id > after)
    return [group_model_to_group(m) for m in session.scalars(stmt)]


def group_members(session: Session, group_id: str) -> list[str]:
    get_group_model(session, group_id)
    return list(session.scalars(select(GroupMemberModel.user_id)
                                .where(GroupMemberModel.group_id == group_id)
                                .order_by(GroupMemberModel.user_id)))


def add_group_member(session: Session, group_id: str, user_id: str, *,
                     actor: audit.Actor, grantor: Principal | None) -> None:
    """Add a user of the group's organization (bound in it or in one of its groups; any user
    for platform administrators) to the group. Joining hands the user every binding of the
    group, so ``grantor`` must hold each of them (the escalation rule)."""
    g = get_group_model(session, group_id)
    require_user_known_to(session, grantor, user_id, g.org_id)
    require_holds_bindings_of(session, grantor, group_id, "adding a member to this group")
    if session.get(GroupMemberModel, (group_id, user_id)) is not None:
        return
    session.add(GroupMemberModel(group_id=group_id, user_id=user_id))
    session.flush()
    bump_policy_version(session)
    audit.record(session, actor=actor, action="iam.group.add_member", target_type="group",
                 target_id=group_id, scope_path=f"/{g.org_id}",
                 changes=audit.diff(None, {"user_id": user_id}))


def remove_group_member(session: Session, group_id: str, user_id: str, *,
                        actor: audit.Actor) -> None:
    g = get_group_model(session, group_id)
    m = session.get(GroupMemberModel, (group_id, user_id))
    if m is None:
        raise NotFound(f"user {user_id} is not a member of group {group_id}")
    session.delete(m)
    bump_policy_version(session)
    audit.record(session, actor=actor, action="iam.group.remove_member", target_type="group",
                 target_id=group_id, scope_path=f"/{g.org_id}",
                 changes=audit.diff({"user_id": user_id}, None))
