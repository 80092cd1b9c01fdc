"""authorize(): one pure, in-memory decision over a policy snapshot.

A snapshot holds the scope tree (parent pointers, with each scope's path to the platform
precomputed), role bindings and deny bindings indexed by subject then scope, roles compiled
to sets of concrete permissions (wildcards expanded against the catalog), and each user's
groups. A check walks at most five scopes (resource, project, department, organization,
platform) for the principal and its groups: a handful of dict and set lookups.

Snapshots are shared per database engine and kept current off the request path: a watcher
in each API process reads the policy version row (every hierarchy, binding, role and group
change bumps it in its own transaction) every POLL_INTERVAL_SECONDS and, when it moved,
brings the snapshot up to date once (a binding change is applied alone, from the change log;
anything else rebuilds), while requests go on deciding on the previous snapshot. A request
pays no query while the shared snapshot was proven current within MAX_STALENESS_SECONDS, and
checks the version row itself when it was not (no watcher, or a dead one): another
process's committed change is enforced here within that bound, a change committed here
before the next request.
"""

from __future__ import annotations

import logging
import threading
import time
import weakref
from collections import defaultdict
from dataclasses import dataclass, field, replace
from typing import Any

from sqlalchemy import event, select
from sqlalchemy.orm import Session

from aicloud.platform.iam.models import (
    DenyBindingModel,
    DepartmentModel,
    GroupMemberModel,
    GroupModel,
    OrganizationModel,
    ProjectModel,
    RoleBindingModel,
    RoleModel,
    ServiceAccountModel,
)
from aicloud.platform.iam.permissions import CATALOG, PermissionCatalog
from aicloud.platform.iam.policy_version import (
    MAX_STALENESS_SECONDS,
    POLL_INTERVAL_SECONDS,
    current_policy_version,
    has_uncommitted_policy_changes,
    newest_policy_change,
    policy_changes_since,
    reader_engine,
)
from aicloud.platform.iam.roles import BUILTIN_ROLES
from aicloud.shared.controllers import Controller

log = logging.getLogger(__name__)

PLATFORM = "platform"
# The catalog's own name table: a dict lookup in the hot path instead of a method call.
_DECLARED = CATALOG.declared


@dataclass(frozen=True, slots=True)
class ResourceRef:
    """A product resource: IAM knows only its type, id and project, never its table."""

    type: str
    id: str
    project_id: str


Target = str | ResourceRef


@dataclass(frozen=True)
class Principal:
    """Who is calling, resolved once per request from a session token or an API key.

    An API key may narrow its principal to one scope (``key_scope``) and to a subset of
    permissions (``key_permissions``); both only ever remove access.
    """

    id: str
    kind: str  # "user" | "service_account"
    email: str | None = None
    session_id: str | None = None
    api_key_id: str | None = None
    key_scope: str | None = None
    key_permissions: frozenset[str] | None = None


class Decision:
    """An answer with its reason: the binding that allowed, the deny binding that refused, or
    that nothing granted it. Plain slots and a reason built on demand keep a check cheap."""

    __slots__ = ("allowed", "binding_id", "deny_binding_id", "kind", "path", "pattern",
                 "role_id", "scope_id", "subject")

    def __init__(self, allowed: bool, kind: str, *, binding_id: str | None = None,
                 role_id: str | None = None, deny_binding_id: str | None = None,
                 pattern: str | None = None, scope_id: str | None = None,
                 subject: str | None = None, path: tuple[str, ...] = ()):
        self.allowed = allowed
        self.kind = kind  # allow | deny | none | unknown-scope | key-scope | key-permissions
        self.binding_id = binding_id
        self.role_id = role_id
        self.deny_binding_id = deny_binding_id
        self.pattern = pattern
        self.scope_id = scope_id
        self.subject = subject
        self.path = path

    @property
    def reason(self) -> str:
        if self.kind == "allow":
            return (f"allowed by {self.binding_id} (role {self.role_id}) at {self.scope_id} "
                    f"for {self.subject}")
        if self.kind == "deny":
            return (f"denied by {self.deny_binding_id} ({self.pattern}) at {self.scope_id} "
                    f"for {self.subject}")
        return _REASONS[self.kind]

    def __bool__(self) -> bool:
        return self.allowed

    def __repr__(self) -> str:
        return f"Decision(allowed={self.allowed}, reason={self.reason!r})"


_REASONS = {
    "none": "no binding grants it",
    "unknown-scope": "unknown scope",
    "key-scope": "outside the API key's scope",
    "key-permissions": "not among the API key's permissions",
}


@dataclass(slots=True)
class _Grant:
    binding_id: str
    role_id: str
    permissions: frozenset[str]


@dataclass(slots=True)
class _Deny:
    deny_id: str
    pattern: str
    permissions: frozenset[str]


@dataclass
class Snapshot:
    version: int
    catalog_revision: int
    seq: int = 0  # the newest policy change row it includes (0: none known)
    roles: dict[str, frozenset[str]] = field(default_factory=dict)  # compiled, by role id
    kind: dict[str, str] = field(default_factory=dict)  # scope id -> org|department|project
    parent: dict[str, str] = field(default_factory=dict)
    paths: dict[str, tuple[str, ...]] = field(default_factory=dict)  # scope -> .. -> platform
    grants: dict[str, dict[str, list[_Grant]]] = field(default_factory=dict)
    denies: dict[str, dict[str, list[_Deny]]] = field(default_factory=dict)
    groups_of: dict[str, tuple[str, ...]] = field(default_factory=dict)
    resource_project: dict[str, str] = field(default_factory=dict)
    service_account_org: dict[str, str] = field(default_factory=dict)  # not platform SAs
    group_org: dict[str, str] = field(default_factory=dict)
    sorted_ids: dict[str, list[str]] = field(default_factory=dict)
    children: dict[str, list[str]] = field(default_factory=dict)

    # -- the tree -------------------------------------------------------------------------

    def exists(self, scope_id: str) -> bool:
        return scope_id in self.paths

    def path_of(self, target: Target) -> tuple[str, ...] | None:
        if isinstance(target, ResourceRef):
            base = self.paths.get(target.project_id)
            if base is None or self.kind.get(target.project_id) != "project":
                return None
            return (target.id, *base)
        path = self.paths.get(target)
        if path is None and target in self.resource_project:
            base = self.paths.get(self.resource_project[target])
            return (target, *base) if base else None
        return path

    def org_of(self, scope_id: str) -> str | None:
        path = self.paths.get(scope_id)
        return path[-2] if path and len(path) >= 2 else None

    def scope_path(self, target: Target) -> str:
        """``/org_x/dep_y/prj_z`` (the form audit events and billing use)."""
        path = self.path_of(target)
        if path is None:
            raise KeyError(target)
        return "/" + "/".join(reversed(path[:-1]))

    def ids_of_kind(self, kind: str) -> list[str]:
        return self.sorted_ids.get(kind, [])

    # -- decisions ------------------------------------------------------------------------

    def authorize(self, principal: Principal, permission: str, target: Target) -> Decision:
        if permission not in _DECLARED:
            raise ValueError(f"permission {permission!r} is not declared")
        path = self.path_of(target)
        if path is None:
            return Decision(False, "unknown-scope")
        if principal.key_scope is not None and principal.key_scope not in path:
            return Decision(False, "key-scope", path=path)
        if principal.key_permissions is not None and permission not in principal.key_permissions:
            return Decision(False, "key-permissions", path=path)
        groups = self.groups_of.get(principal.id)
        subjects = (principal.id, *groups) if groups else (principal.id,)
        denies = self.denies
        for subject in subjects:
            by_scope = denies.get(subject)
            if by_scope is None:
                continue
            for scope in path:
                for deny in by_scope.get(scope, ()):
                    if permission in deny.permissions:
                        return Decision(False, "deny", deny_binding_id=deny.deny_id,
                                        pattern=deny.pattern, scope_id=scope, subject=subject,
                                        path=path)
        grants = self.grants
        bound = [(subject, by_scope) for subject in subjects
                 if (by_scope := grants.get(subject)) is not None]
        for scope in path:
            for subject, by_scope in bound:
                for grant in by_scope.get(scope, ()):
                    if permission in grant.permissions:
                        return Decision(True, "allow", binding_id=grant.binding_id,
                                        role_id=grant.role_id, scope_id=scope, subject=subject,
                                        path=path)
        return Decision(False, "none", path=path)

    def can(self, principal: Principal, permission: str, target: Target) -> bool:
        return self.authorize(principal, permission, target).allowed

    def has_any_grant(self, principal: Principal, target: Target) -> bool:
        """Whether any binding of the principal (or its groups) lies on the target's path:
        the test for "may know this exists" that turns a refusal into 404 or 403."""
        path = self.path_of(target)
        if path is None:
            return False
        if principal.key_scope is not None and principal.key_scope not in path:
            return False
        groups = self.groups_of.get(principal.id)
        for subject in (principal.id, *groups) if groups else (principal.id,):
            by_scope = self.grants.get(subject)
            if by_scope and any(scope in by_scope for scope in path):
                return True
        return False

    def orgs_of(self, principal_id: str) -> set[str]:
        """Organizations a user or service account belongs to (bound in, or in a group of)."""
        out: set[str] = set()
        if principal_id in self.service_account_org:
            out.add(self.service_account_org[principal_id])
        for scope in self.grants.get(principal_id, {}):
            org = self.org_of(self.resource_project.get(scope, scope))
            if org:
                out.add(org)
        out.update(self.group_org[g] for g in self.groups_of.get(principal_id, ())
                   if g in self.group_org)
        return out

    def visible(self, principal: Principal, permission: str, kind: str) -> list[str]:
        """Ids of the scopes of ``kind`` on which ``permission`` is allowed, sorted.

        Only the subtrees under bindings that hold the permission are walked, so a project
        member lists their projects without a check per project of the platform."""
        groups = self.groups_of.get(principal.id)
        roots: set[str] = set()
        for subject in (principal.id, *groups) if groups else (principal.id,):
            for scope, grants in self.grants.get(subject, {}).items():
                if any(permission in g.permissions for g in grants):
                    roots.add(scope)
        if PLATFORM in roots:
            candidates: list[str] = self.ids_of_kind(kind)
        else:
            found: set[str] = set()
            stack = [r for r in roots if r in self.paths]
            while stack:
                scope = stack.pop()
                if self.kind.get(scope) == kind:
                    found.add(scope)
                stack.extend(self.children.get(scope, ()))
            candidates = sorted(found)
        return [s for s in candidates if self.can(principal, permission, s)]


    def visible_scope_paths(self, principal: Principal, permission: str) -> list[str] | None:
        """The smallest set of scope paths under which ``permission`` holds everywhere:
        None when it holds on the whole platform, [] when nowhere.

        A scope whose subtree contains a denied or unbound descendant is not returned as a
        prefix; its allowed descendants are, and records at that scope's own level are left
        out. Readers of path-scoped records (audit events, cost reports) never see too much.
        """
        if self.can(principal, permission, PLATFORM):
            return None
        allowed: set[str] = set()
        for kind in ("org", "department", "project"):
            allowed.update(self.visible(principal, permission, kind))

        def whole(scope: str) -> bool:
            return scope in allowed and all(whole(c) for c in self.children.get(scope, ()))

        out: list[str] = []
        for scope in sorted(allowed, key=lambda s: len(self.paths[s])):
            if not whole(scope):
                continue
            path = self.scope_path(scope)
            if not any(path == p or path.startswith(p + "/") for p in out):
                out.append(path)
        return sorted(out)


def _compile_roles(session: Session, catalog: PermissionCatalog) -> dict[str, frozenset[str]]:
    def expand(patterns: Any) -> frozenset[str]:
        out: set[str] = set()
        for p in patterns:
            out |= catalog.expand(p)
        return frozenset(out)

    roles = {rid: expand(r.permissions) for rid, r in BUILTIN_ROLES.items()}
    # A custom role never grants a platform-only permission, even one declared after it.
    grantable = catalog.grantable()
    for rid, perms in session.execute(select(RoleModel.id, RoleModel.permissions)):
        roles[rid] = expand(perms) & grantable
    return roles


def build_snapshot(session: Session, version: int | None = None,
                   catalog: PermissionCatalog = CATALOG) -> Snapshot:
    version = current_policy_version(session) if version is None else version
    snap = Snapshot(version=version, catalog_revision=catalog.revision,
                    seq=newest_policy_change(session))
    snap.paths[PLATFORM] = (PLATFORM,)
    snap.kind[PLATFORM] = "platform"
    orgs = [r[0] for r in session.execute(select(OrganizationModel.id))]
    for org in orgs:
        snap.kind[org], snap.parent[org] = "org", PLATFORM
        snap.paths[org] = (org, PLATFORM)
    deps = list(session.execute(select(DepartmentModel.id, DepartmentModel.org_id)))
    for dep, org in deps:
        snap.kind[dep], snap.parent[dep] = "department", org
        snap.paths[dep] = (dep, org, PLATFORM)
    projects = list(session.execute(
        select(ProjectModel.id, ProjectModel.org_id, ProjectModel.department_id)))
    for prj, org, dep in projects:
        snap.kind[prj], snap.parent[prj] = "project", dep or org
        snap.paths[prj] = (prj, *snap.paths[dep or org])
    for child, parent in snap.parent.items():
        snap.children.setdefault(parent, []).append(child)
    snap.sorted_ids = {"org": sorted(orgs), "department": sorted(d for d, _ in deps),
                       "project": sorted(p for p, _, _ in projects)}
    groups: dict[str, list[str]] = defaultdict(list)
    for group_id, user_id in session.execute(
            select(GroupMemberModel.group_id, GroupMemberModel.user_id)):
        groups[user_id].append(group_id)
    snap.groups_of = {u: tuple(sorted(g)) for u, g in groups.items()}
    snap.group_org = dict(session.execute(select(GroupModel.id, GroupModel.org_id)).all())
    snap.service_account_org = dict(session.execute(
        select(ServiceAccountModel.id, ServiceAccountModel.org_id)
        .where(ServiceAccountModel.org_id.is_not(None))).all())

    roles = snap.roles = _compile_roles(session, catalog)
    for bid, pid, rid, scope, parent in session.execute(select(
            RoleBindingModel.id, RoleBindingModel.principal_id, RoleBindingModel.role_id,
            RoleBindingModel.scope_id, RoleBindingModel.parent_scope_id)):
        perms = roles.get(rid)
        if perms is None:
            continue
        if parent:
            snap.resource_project[scope] = parent
        snap.grants.setdefault(pid, {}).setdefault(scope, []).append(_Grant(bid, rid, perms))
    expanded: dict[str, frozenset[str]] = {}
    for did, pid, pattern, scope in session.execute(select(
            DenyBindingModel.id, DenyBindingModel.principal_id, DenyBindingModel.permission,
            DenyBindingModel.scope_id)):
        perms = expanded.get(pattern)
        if perms is None:
            perms = expanded[pattern] = catalog.expand(pattern)
        snap.denies.setdefault(pid, {}).setdefault(scope, []).append(_Deny(did, pattern, perms))
    return snap


def advance_snapshot(session: Session, snap: Snapshot | None, version: int,
                     catalog: PermissionCatalog = CATALOG) -> Snapshot:
    """The policy at ``version``: ``snap`` with the logged role and deny binding changes
    since it applied (a few indexed reads, and copies of the two top-level indexes), or, when
    the log cannot bring it there (another kind of change, a pruned or restored log, a new
    permission catalog), a full build."""
    if snap is not None and snap.catalog_revision == catalog.revision:
        changes = policy_changes_since(session, snap.seq, snap.version)
        if (changes and changes[-1].version == version
                and all(c.kind in ("binding", "deny") for c in changes)):
            return _apply_binding_changes(session, snap, changes, catalog)
    return build_snapshot(session, version, catalog)


def _apply_binding_changes(session: Session, snap: Snapshot, changes: list[Any],
                           catalog: PermissionCatalog) -> Snapshot:
    # Re-read the bindings of each changed (principal, scope) as they are now: applying a
    # change twice, or after a later one, gives the same result.
    grant_keys = {(c.principal_id, c.scope_id) for c in changes if c.kind == "binding"}
    deny_keys = {(c.principal_id, c.scope_id) for c in changes if c.kind == "deny"}
    grants, denies = snap.grants, snap.denies
    resource_project = snap.resource_project
    if grant_keys:
        fresh: dict[tuple[str, str], list[_Grant]] = defaultdict(list)
        for bid, pid, rid, scope, parent in session.execute(select(
                RoleBindingModel.id, RoleBindingModel.principal_id, RoleBindingModel.role_id,
                RoleBindingModel.scope_id, RoleBindingModel.parent_scope_id).where(
                RoleBindingModel.principal_id.in_({p for p, _ in grant_keys}),
                RoleBindingModel.scope_id.in_({s for _, s in grant_keys}))):
            perms = snap.roles.get(rid)
            if (pid, scope) not in grant_keys or perms is None:
                continue
            if parent and resource_project.get(scope) != parent:
                if resource_project is snap.resource_project:
                    resource_project = dict(resource_project)
                resource_project[scope] = parent
            fresh[(pid, scope)].append(_Grant(bid, rid, perms))
        grants = _replace_entries(grants, grant_keys, fresh)
    if deny_keys:
        fresh_denies: dict[tuple[str, str], list[_Deny]] = defaultdict(list)
        for did, pid, pattern, scope in session.execute(select(
                DenyBindingModel.id, DenyBindingModel.principal_id, DenyBindingModel.permission,
                DenyBindingModel.scope_id).where(
                DenyBindingModel.principal_id.in_({p for p, _ in deny_keys}),
                DenyBindingModel.scope_id.in_({s for _, s in deny_keys}))):
            if (pid, scope) in deny_keys:
                fresh_denies[(pid, scope)].append(_Deny(did, pattern, catalog.expand(pattern)))
        denies = _replace_entries(denies, deny_keys, fresh_denies)
    last = changes[-1]
    # Everything else (tree, groups, roles) is shared with the previous snapshot: snapshots
    # are never modified once published, only replaced.
    return replace(snap, version=last.version, seq=last.seq, grants=grants, denies=denies,
                   resource_project=resource_project)


def _replace_entries(index: dict[str, dict[str, list[Any]]], keys: set[tuple[str, str]],
                     fresh: dict[tuple[str, str], list[Any]]) -> dict[str, dict[str, list[Any]]]:
    out = dict(index)
    for pid, scope in keys:
        by_scope = dict(out.get(pid, {}))
        entries = fresh.get((pid, scope))
        if entries:
            by_scope[scope] = entries
        else:
            by_scope.pop(scope, None)
        if by_scope:
            out[pid] = by_scope
        else:
            out.pop(pid, None)
    return out


class _Shared:
    """One engine's shared snapshot. ``current`` is replaced as a whole, so the lock-free
    read on the request path never pairs one snapshot with another's verification time."""

    __slots__ = ("__weakref__", "build_lock", "builds", "current", "reader")

    def __init__(self) -> None:
        # (snapshot, monotonic time before the read that proved it current; -inf: unproven)
        self.current: tuple[Snapshot | None, float] = (None, float("-inf"))
        self.build_lock = threading.Lock()  # single flight: one build per engine at a time
        self.builds = 0
        self.reader: Any = None


def _usable(snap: Snapshot | None, version: int) -> bool:
    return (snap is not None and snap.version == version
            and snap.catalog_revision == CATALOG.revision)


class PolicyStore:
    """The latest committed snapshot per database engine, shared by all requests.

    A request uses the shared snapshot without a query while it was proven current less than
    ``max_staleness`` seconds ago. What proves it: the policy watcher (``refresh`` every
    ``POLL_INTERVAL_SECONDS`` in each API process), and ``refresh`` after every commit of a
    policy change in this process (the writer pays for the rebuild before its response goes
    out, so its next request, and everyone else's in this process, sees the change). When no
    proof is recent enough (no watcher, or it died or cannot reach the database), each
    request falls back to reading the version row itself, as before. A change committed by
    another process is thus refused here within ``max_staleness`` at the latest.
    """

    def __init__(self, max_staleness: float = MAX_STALENESS_SECONDS) -> None:
        # Keyed by the engine's pool: one database per pool, and the read-only engine a
        # request uses (Database.read_engine) shares its parent's pool.
        self._shared: weakref.WeakKeyDictionary[Any, _Shared] = weakref.WeakKeyDictionary()
        self._lock = threading.Lock()
        self.max_staleness = max_staleness

    def _of(self, engine: Any) -> _Shared:
        shared = self._shared.get(engine.pool)
        if shared is None:
            with self._lock:
                shared = self._shared.setdefault(engine.pool, _Shared())
        return shared

    def snapshot(self, session: Session) -> Snapshot:
        # A transaction that changed the policy decides on its own changes (it revokes and
        # is refused at once); that snapshot is never shared, since it could still roll back.
        shared = self._of(session.get_bind().engine)
        if has_uncommitted_policy_changes(session):
            return advance_snapshot(session, shared.current[0],
                                    current_policy_version(session))
        snap, verified_at = shared.current
        if (snap is not None and time.monotonic() - verified_at <= self.max_staleness
                and snap.catalog_revision == CATALOG.revision):
            return snap
        # No recent proof: check the version row in this request, as every request once did.
        version = current_policy_version(session)
        read_at = time.monotonic()
        if _usable(snap, version):
            return snap  # type: ignore[return-value]
        with shared.build_lock:
            snap, verified_at = shared.current
            if _usable(snap, version) or (snap is not None and verified_at >= read_at):
                return snap  # type: ignore[return-value]  # built while this one waited
            snap = advance_snapshot(session, snap, version)
            shared.builds += 1
            # Shared but unproven: this transaction's view may predate its own start on
            # SQLite, so only a watcher read (or the next request's version check) vouches.
            shared.current = (snap, float("-inf"))
            return snap

    def refresh(self, engine: Any) -> Snapshot | None:
        """Prove the shared snapshot current or rebuild it (once, whoever else asks), in a
        transaction of its own; what the watcher runs and what follows a policy commit."""
        shared = self._of(engine)
        if shared.reader is None:
            shared.reader = reader_engine(engine)
        if shared.reader is False:
            return None  # an in-memory SQLite database has no second connection to read on
        started = time.monotonic()
        with Session(shared.reader) as session, session.begin():
            version = current_policy_version(session)
            snap = shared.current[0]
            if not _usable(snap, version):
                with shared.build_lock:
                    snap, verified_at = shared.current
                    if verified_at >= started:
                        return snap  # another refresh, begun later, already built it
                    if not _usable(snap, version):
                        snap = advance_snapshot(session, snap, version)
                        shared.builds += 1
                    shared.current = (snap, started)
                    return snap
            with shared.build_lock:
                if shared.current[0] is snap and shared.current[1] < started:
                    shared.current = (snap, started)
            return snap

    def forget(self, engine: Any) -> None:
        """Withdraw the proof: requests check the version row until the next refresh."""
        shared = self._shared.get(engine.pool)
        if shared is not None:
            shared.current = (shared.current[0], float("-inf"))

    def builds(self, engine: Any) -> int:
        """How many times this process built the shared snapshot of ``engine``."""
        shared = self._shared.get(engine.pool)
        return shared.builds if shared else 0

    def is_shared(self, engine: Any) -> bool:
        shared = self._shared.get(engine.pool)
        return shared is not None and shared.current[0] is not None


POLICY = PolicyStore()


@event.listens_for(Session, "after_commit")
def _refresh_after_policy_commit(session: Session) -> None:
    # The committing thread rebuilds before its response goes out: a client that revoked
    # and then calls this process again is refused, while other requests keep deciding on
    # the previous snapshot (still within the bound) instead of all waiting for the build.
    if not has_uncommitted_policy_changes(session):
        return
    engine = session.get_bind().engine
    if not POLICY.is_shared(engine):
        return  # nobody decides on this engine in this process: nothing to keep current
    try:
        POLICY.refresh(engine)
    except Exception:  # the change is committed; requests check the version row instead
        POLICY.forget(engine)
        log.exception("rebuilding the policy snapshot after a policy change failed")


def policy_watcher(engine: Any) -> Controller:
    """The watcher every API process runs: proves its snapshot current (one primary-key
    read) every POLL_INTERVAL_SECONDS and rebuilds it, once, when the version moved. If it
    stops or fails, requests fall back to their own version check after the bound."""
    return Controller(name="iam-policy-watch", interval_seconds=POLL_INTERVAL_SECONDS,
                      run_once=lambda: POLICY.refresh(engine))


def policy_snapshot(session: Session) -> Snapshot:
    return POLICY.snapshot(session)


def authorize(session: Session, principal: Principal, permission: str,
              target: Target) -> Decision:
    """The single decision function: may ``principal`` use ``permission`` on ``target``?"""
    return policy_snapshot(session).authorize(principal, permission, target)
