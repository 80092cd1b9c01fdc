"""The inheritance matrix: a binding at each level by a check at each level, with deny
bindings, groups and moved projects, on SQLite and PostgreSQL."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from sqlalchemy.orm import Session

from aicloud.platform import audit, iam
from aicloud.shared.db import Database
from aicloud.shared.errors import NotFound, ValidationFailed

ACTOR = audit.Actor.system("test")
LEVELS = ("platform", "org", "department", "project", "resource")
PERM = "gpuaas.instances.read"


@dataclass
class Tree:
    org: str
    dep1: str
    dep2: str
    prj: str  # in dep1
    prj_direct: str  # directly under the org
    res: iam.ResourceRef  # in prj
    other_org: str
    other_prj: str

    def target(self, level: str) -> iam.Target:
        return {"platform": iam.PLATFORM, "org": self.org, "department": self.dep1,
                "project": self.prj, "resource": self.res}[level]

    def bind_args(self, level: str) -> tuple[str, iam.ResourceScope | None]:
        if level == "resource":
            return self.prj, iam.ResourceScope(type=self.res.type, id=self.res.id)
        return str(self.target(level)), None


def build_tree(s: Session) -> Tree:
    org = iam.create_org(s, "acme", actor=ACTOR).id
    dep1 = iam.create_department(s, org, "research", actor=ACTOR).id
    dep2 = iam.create_department(s, org, "ops", actor=ACTOR).id
    prj = iam.create_project(s, name="llm", department_id=dep1, actor=ACTOR).id
    direct = iam.create_project(s, name="direct", org_id=org, actor=ACTOR).id
    other = iam.create_org(s, "globex", actor=ACTOR).id
    other_prj = iam.create_project(s, name="x", org_id=other, actor=ACTOR).id
    # A product's resource as IAM sees it: a registered type answering its project.
    WIDGET_PROJECT["wid_1"] = prj
    return Tree(org, dep1, dep2, prj, direct, iam.ResourceRef("test.widget", "wid_1", prj),
                other, other_prj)


WIDGET_PROJECT: dict[str, str] = {}
iam.register_resource_type("test.widget", lambda _s, rid: WIDGET_PROJECT.get(rid))


def user(s: Session, name: str) -> iam.Principal:
    u = iam.create_user(s, email=f"{name}@example.org")
    return iam.Principal(id=u.id, kind="user", email=u.email)


def test_allow_inherits_downward_only(db: Database) -> None:
    with db.transaction() as s:
        tree = build_tree(s)
        bound = {}
        for level in LEVELS:
            p = user(s, f"allow-{level}")
            scope, resource = tree.bind_args(level)
            iam.create_binding(s, scope, iam.RoleBindingCreate(
                principal_id=p.id, role_id="project-viewer", resource=resource), actor=ACTOR,
            grantor=None)
            bound[level] = p
    with db.transaction() as s:
        snap = iam.policy_snapshot(s)
        for i, bind_level in enumerate(LEVELS):
            for j, check_level in enumerate(LEVELS):
                decision = snap.authorize(bound[bind_level], PERM, tree.target(check_level))
                assert decision.allowed == (j >= i), (bind_level, check_level, decision)
                if decision.allowed:
                    assert decision.role_id == "project-viewer" and decision.binding_id
                else:
                    assert decision.reason == "no binding grants it"
            # Nothing leaks sideways: the other organization and the sibling branch.
            assert snap.can(bound[bind_level], PERM, tree.other_prj) == (bind_level == "platform")
            assert snap.can(bound[bind_level], PERM, tree.prj_direct) == (
                bind_level in ("platform", "org"))
            # A permission the role does not hold is refused at every level.
            assert not snap.can(bound[bind_level], "gpuaas.instances.create", tree.res)


def test_deny_overrides_any_allow_below_its_scope(db: Database) -> None:
    with db.transaction() as s:
        tree = build_tree(s)
        denied = {}
        for level in LEVELS:
            p = user(s, f"deny-{level}")
            # Allowed everywhere by a platform-wide binding, then denied at one level.
            iam.create_binding(s, iam.PLATFORM, iam.RoleBindingCreate(
                principal_id=p.id, role_id="project-member"), actor=ACTOR,
            grantor=None)
            scope, resource = tree.bind_args(level)
            if level != "platform":
                iam.create_deny_binding(s, scope, iam.DenyBindingCreate(
                    principal_id=p.id, permission="gpuaas.instances.*", resource=resource),
                    actor=ACTOR,
            grantor=None)
            denied[level] = p
        # Deny above an allow: bound project-admin at the project, denied at the org.
        q = user(s, "deny-above")
        iam.create_binding(s, tree.prj, iam.RoleBindingCreate(
            principal_id=q.id, role_id="project-admin"), actor=ACTOR,
            grantor=None)
        iam.create_deny_binding(s, tree.org, iam.DenyBindingCreate(
            principal_id=q.id, permission="gpuaas.instances.create"), actor=ACTOR,
            grantor=None)
    with db.transaction() as s:
        snap = iam.policy_snapshot(s)
        for i, deny_level in enumerate(LEVELS[1:], start=1):
            for j, check_level in enumerate(LEVELS):
                decision = snap.authorize(denied[deny_level], PERM, tree.target(check_level))
                assert decision.allowed == (j < i), (deny_level, check_level, decision)
                if not decision.allowed:
                    assert decision.deny_binding_id and "denied by" in decision.reason
            # The deny names a pattern: other permissions stay allowed.
            assert snap.can(denied[deny_level], "iam.projects.read", tree.res)
        assert not snap.can(q, "gpuaas.instances.create", tree.prj)
        assert snap.can(q, "gpuaas.instances.stop", tree.prj)


def test_group_bindings_and_group_denies(db: Database) -> None:
    with db.transaction() as s:
        tree = build_tree(s)
        p = user(s, "member")
        g = iam.create_group(s, tree.org, "ml", actor=ACTOR)
        iam.add_group_member(s, g.id, p.id, actor=ACTOR,
            grantor=None)
        iam.create_binding(s, tree.dep1, iam.RoleBindingCreate(
            principal_id=g.id, role_id="project-member"), actor=ACTOR,
            grantor=None)
    with db.transaction() as s:
        decision = iam.authorize(s, p, "gpuaas.instances.create", tree.res)
        assert decision.allowed and g.id in decision.reason
        assert not iam.authorize(s, p, "gpuaas.instances.create", tree.prj_direct).allowed
        iam.create_deny_binding(s, tree.prj, iam.DenyBindingCreate(
            principal_id=g.id, permission="gpuaas.instances.create"), actor=ACTOR,
            grantor=None)
    with db.transaction() as s:
        assert not iam.authorize(s, p, "gpuaas.instances.create", tree.res).allowed
        iam.remove_group_member(s, g.id, p.id, actor=ACTOR)
    with db.transaction() as s:
        assert not iam.authorize(s, p, "gpuaas.instances.read", tree.prj).allowed


def test_moving_a_project_changes_inherited_access_at_once(db: Database) -> None:
    with db.transaction() as s:
        tree = build_tree(s)
        alice, bob = user(s, "alice"), user(s, "bob")
        iam.create_binding(s, tree.dep1, iam.RoleBindingCreate(
            principal_id=alice.id, role_id="project-viewer"), actor=ACTOR,
            grantor=None)
        iam.create_binding(s, tree.dep2, iam.RoleBindingCreate(
            principal_id=bob.id, role_id="project-viewer"), actor=ACTOR,
            grantor=None)
        iam.create_deny_binding(s, tree.dep2, iam.DenyBindingCreate(
            principal_id=alice.id, permission="*"), actor=ACTOR,
            grantor=None)
    # A second engine stands for another API process with its own snapshot cache.
    other_process = Database(db.url)
    try:
        for database in (db, other_process):
            with database.transaction() as s:
                assert iam.authorize(s, alice, PERM, tree.res).allowed
                assert not iam.authorize(s, bob, PERM, tree.res).allowed
        with db.transaction() as s:
            moved = iam.move_project(s, tree.prj, tree.dep2, actor=ACTOR)
            assert moved.scope_path == f"/{tree.org}/{tree.dep2}/{tree.prj}"
        for database in (db, other_process):
            with database.transaction() as s:
                assert iam.scope_path(s, tree.res) == f"/{tree.org}/{tree.dep2}/{tree.prj}/wid_1"
                decision = iam.authorize(s, alice, PERM, tree.res)
                assert not decision.allowed and decision.deny_binding_id  # dep2's deny
                assert iam.authorize(s, bob, PERM, tree.res).allowed
        with db.transaction() as s:
            iam.move_project(s, tree.prj, None, actor=ACTOR)  # directly under the org
        with other_process.transaction() as s:
            assert not iam.authorize(s, alice, PERM, tree.res).allowed
            assert not iam.authorize(s, bob, PERM, tree.res).allowed
            assert iam.scope_path(s, tree.prj) == f"/{tree.org}/{tree.prj}"
    finally:
        other_process.dispose()


def test_a_rolled_back_change_never_reaches_the_shared_snapshot(db: Database) -> None:
    with db.transaction() as s:
        tree = build_tree(s)
        p = user(s, "p")
    with pytest.raises(RuntimeError), db.transaction() as s:
        iam.create_binding(s, tree.org, iam.RoleBindingCreate(
            principal_id=p.id, role_id="org-owner"), actor=ACTOR,
            grantor=None)
        assert iam.authorize(s, p, PERM, tree.prj).allowed  # seen inside its transaction
        raise RuntimeError("abort")
    with db.transaction() as s:
        assert not iam.authorize(s, p, PERM, tree.prj).allowed


def test_undeclared_permissions_cannot_be_checked_or_bound(db: Database) -> None:
    with db.transaction() as s:
        tree = build_tree(s)
        p = user(s, "p")
        with pytest.raises(ValueError, match="not declared"):
            iam.authorize(s, p, "gpuaas.instances.teleport", tree.prj)
        with pytest.raises(ValidationFailed):
            iam.create_role(s, tree.org, iam.RoleCreate(
                name="bad", permissions=["gpuaas.instances.teleport"]), actor=ACTOR,
            grantor=None)
        with pytest.raises(ValidationFailed):
            iam.create_deny_binding(s, tree.org, iam.DenyBindingCreate(
                principal_id=p.id, permission="nope.*"), actor=ACTOR,
            grantor=None)


def test_custom_roles_expand_patterns_and_stay_in_their_org(db: Database) -> None:
    with db.transaction() as s:
        tree = build_tree(s)
        p = user(s, "p")
        role = iam.create_role(s, tree.org, iam.RoleCreate(
            name="gpu-operator", permissions=["gpuaas.instances.*", "iam.projects.read"]),
            actor=ACTOR,
            grantor=None)
        iam.create_binding(s, tree.prj, iam.RoleBindingCreate(
            principal_id=p.id, role_id=role.id), actor=ACTOR,
            grantor=None)
        with pytest.raises(NotFound):  # another organization cannot use it
            iam.create_binding(s, tree.other_prj, iam.RoleBindingCreate(
                principal_id=p.id, role_id=role.id), actor=ACTOR,
            grantor=None)
    with db.transaction() as s:
        assert iam.authorize(s, p, "gpuaas.instances.stop", tree.res).allowed
        assert not iam.authorize(s, p, "iam.projects.delete", tree.prj).allowed


def test_every_change_is_audited_in_its_transaction(db: Database) -> None:
    from sqlalchemy import func, select

    from aicloud.platform.audit.models import AuditEventModel

    with db.transaction() as s:
        build_tree(s)
    with db.transaction() as s:
        actions = dict(s.execute(select(AuditEventModel.action, func.count())
                                 .group_by(AuditEventModel.action)).all())
    assert actions == {"iam.org.create": 2, "iam.department.create": 2,
                       "iam.project.create": 3}


def test_every_builtin_role_pattern_names_declared_permissions() -> None:
    for role in iam.BUILTIN_ROLES.values():
        for pattern in role.permissions:
            assert iam.CATALOG.expand(pattern), (role.id, pattern)
    # Scope bounds what a role reaches: an org-owner holds iam.orgs.create in its set, but
    # the action targets the platform, where it is bound nowhere.
    assert "iam.orgs.create" in iam.CATALOG.expand("iam.*")


def test_api_key_narrowing_only_removes_access(db: Database) -> None:
    with db.transaction() as s:
        tree = build_tree(s)
        p = user(s, "keyed")
        iam.create_binding(s, tree.org, iam.RoleBindingCreate(
            principal_id=p.id, role_id="org-admin"), actor=ACTOR,
            grantor=None)
        narrowed = iam.Principal(id=p.id, kind="user", api_key_id="key_x",
                                 key_scope=tree.dep1,
                                 key_permissions=frozenset({"iam.projects.read"}))
    with db.transaction() as s:
        assert iam.authorize(s, narrowed, "iam.projects.read", tree.res).allowed
        assert not iam.authorize(s, narrowed, "iam.projects.update", tree.prj).allowed
        outside = iam.authorize(s, narrowed, "iam.projects.read", tree.prj_direct)
        assert not outside.allowed and "scope" in outside.reason
        # Narrowing to a permission the principal does not hold grants nothing.
        wider = iam.Principal(id=p.id, kind="user", key_permissions=frozenset(
            {"billing.prices.write"}))
        assert not iam.authorize(s, wider, "billing.prices.write", iam.PLATFORM).allowed
