"""The shared policy snapshot's freshness: no version query on the request path in steady
state, a change committed by another API process enforced within the bound (also when its
watcher is dead), the revoking transaction and this process's next request refused at once,
and one rebuild per change per process however many requests need it. On SQLite and
PostgreSQL, with two engines standing for two processes."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import httpx
import pytest
from sqlalchemy import event
from sqlalchemy.engine import Engine

from aicloud.api.app import create_app
from aicloud.api.authz import Caller
from aicloud.platform import audit, iam
from aicloud.platform.iam.authorize import POLICY
from aicloud.platform.iam.policy_version import MAX_STALENESS_SECONDS
from aicloud.runtime import build_context
from aicloud.shared.controllers import ControllerRunner
from aicloud.shared.db import Database
from tests.conftest import LiveServer, make_settings

ACTOR = audit.Actor.system("test")
WATCHER_THREAD = "controller-iam-policy-watch"


@dataclass
class World:
    prj: str
    user: iam.Principal
    binding: str
    user_key: str
    admin_key: str


def seed(db: Database) -> World:
    with db.transaction() as s:
        org = iam.create_org(s, "acme", actor=ACTOR).id
        prj = iam.create_project(s, name="llm", org_id=org, actor=ACTOR).id
        admin = iam.create_user(s, email="root@example.org")
        iam.create_binding(s, iam.PLATFORM, iam.RoleBindingCreate(
            principal_id=admin.id, role_id="platform-admin"), actor=ACTOR, grantor=None)
        user = iam.create_user(s, email="ann@example.org")
        binding = iam.create_binding(s, prj, iam.RoleBindingCreate(
            principal_id=user.id, role_id="project-viewer"), actor=ACTOR, grantor=None).id
        keys = [iam.create_api_key(s, p.id, iam.ApiKeyCreate(name="k"), actor=ACTOR,
                                   grantor=None).secret for p in (user, admin)]
    return World(prj, iam.Principal(id=user.id, kind="user"), binding, *keys)


class Statements:
    """SQL an engine ran, with the thread that ran it (the watcher's are told apart)."""

    def __init__(self, engine: Engine):
        self.engine = engine
        self.seen: list[tuple[str, str]] = []
        event.listen(engine, "before_cursor_execute", self._record)

    def _record(self, _conn, _cursor, statement, *_args) -> None:  # type: ignore[no-untyped-def]
        self.seen.append((threading.current_thread().name, statement))

    def close(self) -> None:
        event.remove(self.engine, "before_cursor_execute", self._record)

    def on_request_path(self, table: str) -> int:
        return sum(1 for thread, sql in self.seen
                   if thread != WATCHER_THREAD and f"FROM {table}" in sql)

    def builds(self) -> int:
        # Building or advancing a snapshot is what reads role bindings with their parent.
        return sum(1 for _t, sql in self.seen
                   if "FROM role_bindings" in sql and "parent_scope_id" in sql)

    def full_builds(self) -> int:
        return sum(1 for _t, sql in self.seen
                   if "FROM role_bindings" in sql and "parent_scope_id" in sql
                   and "WHERE" not in sql)


@contextmanager
def second_process(db: Database) -> Iterator[Database]:
    """Another API process's engine on the same database."""
    other = Database(db.url)
    try:
        yield other
    finally:
        other.dispose()


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def test_another_process_refuses_within_the_bound_without_a_query_per_request(
        db: Database) -> None:
    world = seed(db)
    with second_process(db) as db_b:
        ctx_a = build_context(make_settings(db), db)
        ctx_b = build_context(make_settings(db_b), db_b)
        seen_b = Statements(db_b.engine)
        app_b = create_app(ctx_b)
        with LiveServer(ctx_a) as a, LiveServer(ctx_b, app=app_b) as b, \
                httpx.Client(timeout=30) as http:
            project_b = f"{b.url}/projects/{world.prj}"
            assert http.get(project_b, headers=bearer(world.user_key)).status_code == 200

            # Steady state: the watcher vouches for the snapshot; requests ask nothing.
            POLICY.refresh(db_b.engine)  # a watcher poll, so the batch starts with a proof
            seen_b.seen.clear()
            for _ in range(20):
                assert http.get(project_b, headers=bearer(world.user_key)).status_code == 200
            assert seen_b.on_request_path("iam_policy_version") == 0
            assert seen_b.on_request_path("role_bindings") == 0

            # Revoke through A: A refuses on the very next request (its writer rebuilt
            # before answering), B within the bound.
            resp = http.delete(f"{a.url}/bindings/{world.binding}",
                               headers=bearer(world.admin_key))
            assert resp.status_code == 204, resp.text
            revoked_at = time.monotonic()
            assert http.get(f"{a.url}/projects/{world.prj}",
                            headers=bearer(world.user_key)).status_code == 404
            while http.get(project_b, headers=bearer(world.user_key)).status_code != 404:
                assert time.monotonic() - revoked_at < 10 * MAX_STALENESS_SECONDS
            time.sleep(max(0.0, revoked_at + MAX_STALENESS_SECONDS - time.monotonic()))
            assert http.get(project_b, headers=bearer(world.user_key)).status_code == 404

            # B's watcher dies: a grant through A is still seen by B within the bound, each
            # request of B now checking the version row itself.
            app_b.state.serving_runner.stop()
            resp = http.post(f"{a.url}/scopes/{world.prj}/bindings",
                             headers=bearer(world.admin_key),
                             json={"principal_id": world.user.id, "role_id": "project-viewer"})
            assert resp.status_code == 201, resp.text
            granted_at = time.monotonic()
            time.sleep(max(0.0, granted_at + MAX_STALENESS_SECONDS - time.monotonic()))
            seen_b.seen.clear()
            assert http.get(project_b, headers=bearer(world.user_key)).status_code == 200
            assert seen_b.on_request_path("iam_policy_version") >= 1
        seen_b.close()


def test_the_revoking_transaction_and_the_next_request_see_it_at_once(db: Database) -> None:
    world = seed(db)
    with db.transaction() as s:
        POLICY.refresh(db.engine)
        caller = Caller(world.user, s, ACTOR)
        assert caller.can("iam.projects.read", world.prj)
        iam.delete_binding(s, world.binding, actor=ACTOR)
        assert not caller.can("iam.projects.read", world.prj)  # its own, unshared snapshot
    seen = Statements(db.engine)
    try:
        with db.transaction() as s:
            assert not Caller(world.user, s, ACTOR).can("iam.projects.read", world.prj)
        # Proven by the rebuild that followed the commit: no version query needed.
        assert seen.on_request_path("iam_policy_version") == 0
    finally:
        seen.close()


def test_a_rolled_back_revocation_is_never_shared(db: Database) -> None:
    world = seed(db)
    POLICY.refresh(db.engine)
    with pytest.raises(RuntimeError), db.transaction() as s:
        iam.delete_binding(s, world.binding, actor=ACTOR)
        assert not Caller(world.user, s, ACTOR).can("iam.projects.read", world.prj)
        raise RuntimeError("roll back")
    with db.transaction() as s:
        assert Caller(world.user, s, ACTOR).can("iam.projects.read", world.prj)


def _decide_in_threads(db: Database, world: World, threads: int,
                       until_refused: bool) -> list[bool]:
    """``threads`` requests at once, each in its own transaction; with ``until_refused``
    each repeats until refused (or 10 bounds pass)."""
    barrier = threading.Barrier(threads)
    answers: list[bool] = []

    def request() -> None:
        barrier.wait()
        deadline = time.monotonic() + 10 * MAX_STALENESS_SECONDS
        while True:
            with db.transaction() as s:
                allowed = Caller(world.user, s, ACTOR).can("iam.projects.read", world.prj)
            if not (until_refused and allowed) or time.monotonic() > deadline:
                answers.append(allowed)
                return

    pool = [threading.Thread(target=request) for _ in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    return answers


def test_concurrent_requests_needing_a_new_snapshot_build_it_once(db: Database) -> None:
    world = seed(db)
    with second_process(db) as db_b:
        seen = Statements(db_b.engine)
        try:
            assert _decide_in_threads(db_b, world, 8, until_refused=False) == [True] * 8
            with db.transaction() as s:  # another process revokes
                iam.delete_binding(s, world.binding, actor=ACTOR)
            seen.seen.clear()
            # No watcher here: each request checks the version row, and all eight find
            # the snapshot out of date at once.
            assert _decide_in_threads(db_b, world, 8, until_refused=False) == [False] * 8
            assert seen.builds() == 1
        finally:
            seen.close()


def test_two_processes_each_rebuild_once_per_change(db: Database) -> None:
    world = seed(db)
    with second_process(db) as db_b, second_process(db) as db_c:
        engines = (db_b, db_c)
        runners = [ControllerRunner([iam.policy_watcher(d.engine)]) for d in engines]
        try:
            for runner in runners:
                runner.start()
            for d in engines:
                assert _decide_in_threads(d, world, 4, until_refused=False) == [True] * 4
            before = [POLICY.builds(d.engine) for d in engines]
            with db.transaction() as s:  # a third process revokes
                iam.delete_binding(s, world.binding, actor=ACTOR)
            answers: list[list[bool]] = [[], []]
            pool = [threading.Thread(target=lambda i=i: answers[i].extend(
                _decide_in_threads(engines[i], world, 4, until_refused=True)))
                for i in range(2)]
            for t in pool:
                t.start()
            for t in pool:
                t.join()
            assert answers == [[False] * 4, [False] * 4]
            # The watcher builds on a reader connection of its own (see reader_engine).
            assert [POLICY.builds(d.engine) - n for d, n in zip(engines, before,
                                                                 strict=True)] == [1, 1]
        finally:
            for runner in runners:
                runner.stop()


def test_a_binding_change_is_applied_alone_and_decides_as_a_full_build(db: Database) -> None:
    """Random role and deny binding changes, each applied to the previous snapshot from the
    change log (no full reload), decide every check exactly as a snapshot built from
    scratch; a change of another kind (a new project) rebuilds in full."""
    import random

    rng = random.Random(3)
    with db.transaction() as s:
        org = iam.create_org(s, "acme", actor=ACTOR).id
        dep = iam.create_department(s, org, "r", actor=ACTOR).id
        prjs = [iam.create_project(s, name=f"p{i}", department_id=dep if i % 2 else None,
                                   org_id=None if i % 2 else org, actor=ACTOR).id
                for i in range(4)]
        users = [iam.Principal(id=iam.create_user(s, email=f"u{i}@example.org").id,
                               kind="user") for i in range(4)]
        grp = iam.create_group(s, org, "g", actor=ACTOR)
        iam.create_binding(s, prjs[0], iam.RoleBindingCreate(
            principal_id=users[0].id, role_id="project-viewer"), actor=ACTOR, grantor=None)
        iam.add_group_member(s, grp.id, users[0].id, actor=ACTOR, grantor=None)
    scopes = [org, dep, *prjs]
    subjects = [u.id for u in users] + [grp.id]
    perms = ["iam.projects.read", "gpuaas.instances.create", "iam.bindings.write"]
    with db.transaction() as s:
        POLICY.refresh(db.engine)
    seen = Statements(db.engine)
    reader = Statements(POLICY._of(db.engine).reader) if db.dialect == "sqlite" else seen
    compared = 0
    try:
        for step in range(12):
            with db.transaction() as s:
                existing = (list(iam.list_bindings(s, rng.choice(scopes), after=None, limit=50))
                            if step % 3 == 2 else [])
                if existing:
                    iam.delete_binding(s, rng.choice(existing).id, actor=ACTOR)
                elif step % 4 == 3:
                    iam.create_deny_binding(s, rng.choice(scopes), iam.DenyBindingCreate(
                        principal_id=rng.choice(subjects), permission="gpuaas.instances.*"),
                        actor=ACTOR, grantor=None)
                else:
                    try:
                        iam.create_binding(s, rng.choice(scopes), iam.RoleBindingCreate(
                            principal_id=rng.choice(subjects),
                            role_id=rng.choice(["project-viewer", "project-admin"])),
                            actor=ACTOR, grantor=None)
                    except Exception:  # the same binding twice: 409
                        continue
            compared += 1
            with db.transaction() as s:
                shared = iam.policy_snapshot(s)
                full = iam.build_snapshot(s)
                assert shared.version == full.version
                for u in users:
                    for perm in perms:
                        for scope in scopes:
                            assert (shared.authorize(u, perm, scope).allowed
                                    == full.authorize(u, perm, scope).allowed), (u, perm, scope)
        # One full read only: the test's own build_snapshot per step; the shared snapshot
        # advanced from the log (bindings read WHERE principal and scope).
        assert compared >= 6
        assert seen.full_builds() + (reader.full_builds() if reader is not seen else 0) == compared
        seen.seen.clear()
        with db.transaction() as s:
            iam.create_project(s, name="new", org_id=org, actor=ACTOR)
        assert seen.full_builds() + (reader.full_builds() if reader is not seen else 0) == 1
    finally:
        seen.close()
        if reader is not seen:
            reader.close()


def test_a_log_that_no_longer_holds_the_snapshot_base_rebuilds_in_full(db: Database) -> None:
    world = seed(db)
    with db.transaction() as s:
        stale = iam.policy_snapshot(s)
    from sqlalchemy import delete

    from aicloud.platform.iam.authorize import advance_snapshot
    from aicloud.platform.iam.models import PolicyChangeModel

    with db.transaction() as s:  # a restored database: the log lost the snapshot's base
        iam.delete_binding(s, world.binding, actor=ACTOR)
        s.execute(delete(PolicyChangeModel).where(PolicyChangeModel.seq <= stale.seq))
    with db.transaction() as s:
        snap = advance_snapshot(s, stale, iam.build_snapshot(s).version)
        assert not snap.can(world.user, "iam.projects.read", world.prj)
        assert snap.grants is not stale.grants
