"""authorize() on a large tree against Cedar (cedarpy) evaluating the same policies.

The tree: 1 organization, 20 departments, 10,000 projects (70% in departments), 5,000 users
in 100 groups, 50,000 role bindings (organization, department, project and resource level,
for users and groups) and 200 deny bindings. The snapshot is built from a real (SQLite)
database through ``build_snapshot``. Cedar gets the equivalent model: scopes as an entity
hierarchy, roles as action groups, one permit per binding and one forbid per deny binding,
with the policy set and entities parsed once up front. Every sampled decision is compared:
the run fails if the two engines ever disagree.

Besides ``Snapshot.authorize`` on a cached object, it measures what a request pays: a
``Caller`` built in an open request transaction deciding through ``policy_snapshot`` (the
freshness check included), with the policy watcher running as in an API process, against
the per-request version query every request paid before (the path a process without a
live watcher still falls back to). And while a binding change made by another "process"
(a second engine) is being applied at 50k bindings: the per-request authorize p99 and the
time from the change's commit until this process decides by it.
"""

from __future__ import annotations

import json
import random
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import delete, insert

import aicloud.runtime  # noqa: F401  (declares the platform's permissions)
from aicloud.api.authz import Caller
from aicloud.platform import audit, iam
from aicloud.platform.iam.authorize import POLICY
from aicloud.platform.iam.models import (
    DenyBindingModel,
    DepartmentModel,
    GroupMemberModel,
    GroupModel,
    OrganizationModel,
    ProjectModel,
    RoleBindingModel,
    UserModel,
)
from aicloud.platform.iam.policy_version import bump_policy_version
from aicloud.shared.clock import utcnow
from aicloud.shared.controllers import ControllerRunner
from aicloud.shared.db import Database, migrate
from aicloud.shared.ids import new_id
from bench.harness import Measurement, percentiles

ROLES = ("project-viewer", "project-member", "project-admin")
PERMISSIONS = ("gpuaas.instances.read", "gpuaas.instances.create", "gpuaas.instances.stop",
               "iam.projects.read", "iam.projects.update", "iam.bindings.write",
               "billing.usage.read", "iam.projects.delete")


@dataclass
class World:
    snapshot: iam.Snapshot
    users: list[str]
    projects: list[str]
    resources: list[iam.ResourceRef]
    build_seconds: float
    cedar_policies: str
    cedar_entities: list[dict]
    # Each policy line under the principal it names, for the "sliced" Cedar baseline.
    cedar_by_principal: dict[str, list[str]]
    groups_of: dict[str, str]
    db: Database  # the world's database, open until cleanup()
    tmp: str
    org: str

    def cleanup(self) -> None:
        self.db.dispose()
        shutil.rmtree(self.tmp, ignore_errors=True)


def build_world(*, departments: int = 20, projects: int = 10_000, users: int = 5_000,
                groups: int = 100, bindings: int = 50_000, denies: int = 200,
                seed: int = 7) -> World:
    rng = random.Random(seed)
    now = utcnow()
    tmp = tempfile.mkdtemp(prefix="aicloud-bench-")
    db = Database(f"sqlite:///{Path(tmp) / 'bench.db'}")
    migrate.upgrade(db)
    org = new_id("org")
    deps = [new_id("dep") for _ in range(departments)]
    prjs = sorted(new_id("prj") for _ in range(projects))
    prj_dep = {p: (rng.choice(deps) if rng.random() < 0.7 else None) for p in prjs}
    user_ids = [new_id("user") for _ in range(users)]
    group_ids = [new_id("grp") for _ in range(groups)]
    member_of = {u: group_ids[i % groups] for i, u in enumerate(user_ids)}
    resources = [iam.ResourceRef("gpuaas.instance", new_id("inst"), rng.choice(prjs))
                 for _ in range(2_000)]

    rows: list[dict] = []
    for i in range(bindings):
        r = rng.random()
        subject = rng.choice(group_ids) if rng.random() < 0.1 else rng.choice(user_ids)
        row = {"id": new_id("rb"), "principal_id": subject, "created_at": now,
               "org_id": org, "resource_type": None, "parent_scope_id": None}
        if i < 20:
            row.update(scope_id=org, role_id="org-admin" if i % 2 else "auditor")
        elif r < 0.01:
            row.update(scope_id=rng.choice(deps), role_id="department-admin")
        elif r < 0.05:
            res = rng.choice(resources)
            row.update(scope_id=res.id, resource_type=res.type, parent_scope_id=res.project_id,
                       role_id=rng.choice(ROLES))
        else:
            row.update(scope_id=rng.choice(prjs), role_id=rng.choice(ROLES))
        rows.append(row)
    deny_rows = [{"id": new_id("deny"), "principal_id": rng.choice(user_ids),
                  "permission": rng.choice(("gpuaas.instances.*", "iam.projects.update",
                                            "*")),
                  "scope_id": rng.choice(prjs + deps), "resource_type": None,
                  "parent_scope_id": None, "org_id": org, "created_at": now}
                 for _ in range(denies)]
    with db.transaction() as s:
        s.execute(insert(OrganizationModel), [{"id": org, "name": "bench", "created_at": now,
                                               "updated_at": now}])
        s.execute(insert(DepartmentModel), [{"id": d, "org_id": org, "name": d,
                                             "created_at": now, "updated_at": now}
                                            for d in deps])
        s.execute(insert(ProjectModel), [{"id": p, "org_id": org, "department_id": prj_dep[p],
                                          "name": p, "created_at": now, "updated_at": now}
                                         for p in prjs])
        s.execute(insert(UserModel), [{"id": u, "email": f"{u}@bench", "display_name": u,
                                       "disabled": False, "created_at": now, "updated_at": now}
                                      for u in user_ids])
        s.execute(insert(GroupModel), [{"id": g, "org_id": org, "name": g, "created_at": now}
                                       for g in group_ids])
        s.execute(insert(GroupMemberModel), [{"group_id": g, "user_id": u}
                                             for u, g in member_of.items()])
        s.execute(insert(RoleBindingModel), rows)
        s.execute(insert(DenyBindingModel), deny_rows)
        bump_policy_version(s)  # the change log's first entry: what snapshots advance from
    t0 = time.perf_counter()
    with db.transaction() as s:
        snapshot = iam.build_snapshot(s)
    build = time.perf_counter() - t0

    policies, entities, by_principal = _cedar_model(org, deps, prjs, prj_dep, user_ids,
                                                    member_of, group_ids, resources, rows,
                                                    deny_rows)
    return World(snapshot, user_ids, prjs, resources, build, policies, entities, by_principal,
                 member_of, db, tmp, org)


def _uid(kind: str, value: str) -> dict:
    return {"type": kind, "id": value}


def _cedar_model(org, deps, prjs, prj_dep, users, member_of, groups, resources, rows,  # type: ignore[no-untyped-def]
                 deny_rows) -> tuple[str, list[dict], dict[str, list[str]]]:
    catalog = iam.CATALOG
    entities: list[dict] = [{"uid": _uid("Scope", "platform"), "attrs": {}, "parents": []},
                            {"uid": _uid("Scope", org), "attrs": {},
                             "parents": [_uid("Scope", "platform")]}]
    entities += [{"uid": _uid("Scope", d), "attrs": {}, "parents": [_uid("Scope", org)]}
                 for d in deps]
    entities += [{"uid": _uid("Scope", p), "attrs": {},
                  "parents": [_uid("Scope", prj_dep[p] or org)]} for p in prjs]
    entities += [{"uid": _uid("Scope", r.id), "attrs": {},
                  "parents": [_uid("Scope", r.project_id)]} for r in resources]
    entities += [{"uid": _uid("Group", g), "attrs": {}, "parents": []} for g in groups]
    entities += [{"uid": _uid("User", u), "attrs": {}, "parents": [_uid("Group", member_of[u])]}
                 for u in users]
    # Roles become action groups; each permission is an action inside the roles granting it.
    role_ids = sorted({r["role_id"] for r in rows})
    expanded = {rid: set().union(*(catalog.expand(p) for p in iam.BUILTIN_ROLES[rid].permissions))
                for rid in role_ids}
    for rid in role_ids:
        entities.append({"uid": _uid("Action", f"role:{rid}"), "attrs": {}, "parents": []})
    for perm in catalog.names():
        entities.append({"uid": _uid("Action", perm), "attrs": {},
                         "parents": [_uid("Action", f"role:{rid}") for rid in role_ids
                                     if perm in expanded[rid]]})

    def who(pid: str) -> str:
        return (f'principal in Group::"{pid}"' if pid.startswith("grp_")
                else f'principal == User::"{pid}"')

    lines: list[str] = []
    by_principal: dict[str, list[str]] = {}
    for r in rows:
        line = (f'permit({who(r["principal_id"])}, action in Action::"role:{r["role_id"]}", '
                f'resource in Scope::"{r["scope_id"]}");')
        lines.append(line)
        by_principal.setdefault(r["principal_id"], []).append(line)
    for d in deny_rows:
        actions = ", ".join(f'Action::"{a}"' for a in sorted(catalog.expand(d["permission"])))
        line = (f'forbid({who(d["principal_id"])}, action in [{actions}], '
                f'resource in Scope::"{d["scope_id"]}");')
        lines.append(line)
        by_principal.setdefault(d["principal_id"], []).append(line)
    return "\n".join(lines), entities, by_principal


def _time_each(fn: Callable[[int], object], n: int) -> list[float]:
    out = []
    for i in range(n):
        t0 = time.perf_counter_ns()
        fn(i)
        out.append((time.perf_counter_ns() - t0) / 1000)
    return out


def compare(world: World, *, checks: int, cedar_checks: int, sliced_checks: int,
            seed: int = 11) -> tuple[list[float], list[float], list[float]]:
    """Per-check latencies (µs) of ours, of Cedar over the policies naming the principal
    or its group (a pre-sliced policy store: the fair baseline, given the caller's own
    policies as a real deployment would) and of Cedar over the whole policy set (slow; a
    sample for scale only)."""
    import cedarpy

    rng = random.Random(seed)
    cases = []
    for _ in range(checks):
        user = iam.Principal(id=rng.choice(world.users), kind="user")
        target: iam.Target = (rng.choice(world.resources) if rng.random() < 0.3
                              else rng.choice(world.projects))
        cases.append((user, rng.choice(PERMISSIONS), target))
    snap = world.snapshot
    ours = _time_each(lambda i: snap.authorize(*cases[i]), checks)

    policy_set = cedarpy.PolicySet.from_str(world.cedar_policies)
    entities = cedarpy.Entities.from_json_str(json.dumps(world.cedar_entities))

    def request(i: int) -> dict:
        user, perm, target = cases[i]
        rid = target.id if isinstance(target, iam.ResourceRef) else target
        return {"principal": _uid("User", user.id), "action": _uid("Action", perm),
                "resource": _uid("Scope", rid), "context": {}}

    requests = [request(i) for i in range(max(cedar_checks, sliced_checks))]
    answers: dict[int, bool] = {}

    def cedar(i: int) -> None:
        answers[i] = cedarpy.is_authorized(requests[i], policy_set, entities).allowed

    theirs = _time_each(cedar, cedar_checks)
    _check_agreement(snap, cases, answers, "Cedar")

    # Slicing (done ahead, as a policy store indexed by principal would) is not timed.
    slices = {}
    for i in range(sliced_checks):
        uid = cases[i][0].id
        if uid not in slices:
            text = "\n".join(world.cedar_by_principal.get(uid, [])
                             + world.cedar_by_principal.get(world.groups_of[uid], []))
            slices[uid] = cedarpy.PolicySet.from_str(text) if text else None

    def sliced(i: int) -> None:
        policy = slices[cases[i][0].id]
        answers[i] = (policy is not None
                      and cedarpy.is_authorized(requests[i], policy, entities).allowed)

    answers.clear()
    theirs_sliced = _time_each(sliced, sliced_checks)
    _check_agreement(snap, cases, answers, "sliced Cedar")
    return ours, theirs_sliced, theirs


def _check_agreement(snap: iam.Snapshot, cases: list, answers: dict[int, bool],  # type: ignore[type-arg]
                     name: str) -> None:
    disagree = [i for i in answers if answers[i] != snap.authorize(*cases[i]).allowed]
    if disagree:
        raise AssertionError(f"authorize() and {name} disagree on {len(disagree)} of "
                             f"{len(answers)} checks, e.g. {cases[disagree[0]]}")


ACTOR = audit.Actor.system("bench")


def _cases(world: World, n: int, seed: int) -> list[tuple[iam.Principal, str, iam.Target]]:
    rng = random.Random(seed)
    return [(iam.Principal(id=rng.choice(world.users), kind="user"), rng.choice(PERMISSIONS),
             rng.choice(world.resources) if rng.random() < 0.3 else rng.choice(world.projects))
            for _ in range(n)]


def per_request(world: World, *, checks: int) -> tuple[list[float], list[float]]:
    """Per-decision latencies (µs) of a request's ``Caller.authorize`` in an open transaction:
    with the watcher vouching for the snapshot (ours), and with no proof, i.e. one version
    query per request (what every request paid before; a dead watcher's fallback)."""
    cases = _cases(world, checks, 13)
    engine = world.db.engine
    watcher = ControllerRunner([iam.policy_watcher(engine)])
    watcher.start()
    try:
        POLICY.refresh(engine)
        with world.db.transaction() as s:
            ours = _time_each(lambda i: Caller(cases[i][0], s, ACTOR).authorize(
                cases[i][1], cases[i][2]), checks)
    finally:
        watcher.stop()
    POLICY.forget(engine)
    with world.db.transaction() as s:
        before = _time_each(lambda i: Caller(cases[i][0], s, ACTOR).authorize(
            cases[i][1], cases[i][2]), checks)
    return ours, before


def during_change(world: World, *, min_samples: int = 10_000,
                  min_changes: int = 3) -> tuple[list[float], list[float]]:
    """Another process (a second engine, no snapshot of its own) adds or removes one
    binding; this one, watcher running, decides requests meanwhile. Returns per-request
    latencies (µs) taken between each commit and the moment this process decides by the
    change, and those visibility delays (ms)."""
    probe_user, probe_prj = _unbound_pair(world)
    probe = iam.Principal(id=probe_user, kind="user")
    cases = _cases(world, 50_000, 17)
    engine = world.db.engine
    other = Database(world.db.url)
    watcher = ControllerRunner([iam.policy_watcher(engine)])
    watcher.start()
    samples: list[float] = []
    delays: list[float] = []
    committed = threading.Event()
    commit_at = [0.0]
    try:
        POLICY.refresh(engine)
        granted = False
        i = 0
        while len(samples) < min_samples or len(delays) < min_changes:
            granted = not granted
            committed.clear()
            writer = threading.Thread(target=_toggle, args=(other, world.org, probe_user,
                                                            probe_prj, granted, committed,
                                                            commit_at))
            writer.start()
            committed.wait()
            while True:
                with world.db.session() as s:  # a request's session; no transaction begun
                    user, perm, target = cases[i % len(cases)]
                    i += 1
                    t0 = time.perf_counter_ns()
                    Caller(user, s, ACTOR).authorize(perm, target)
                    samples.append((time.perf_counter_ns() - t0) / 1000)
                    if i % 16 == 0 and Caller(probe, s, ACTOR).can(
                            "iam.projects.read", probe_prj) == granted:
                        delays.append((time.monotonic() - commit_at[0]) * 1000)
                        break
            writer.join()
    finally:
        watcher.stop()
        other.dispose()
    return samples, delays


def _unbound_pair(world: World) -> tuple[str, str]:
    snap = world.snapshot
    rng = random.Random(5)
    while True:
        user, prj = rng.choice(world.users), rng.choice(world.projects)
        if not snap.has_any_grant(iam.Principal(id=user, kind="user"), prj):
            return user, prj


def _toggle(db: Database, org: str, user: str, prj: str, grant: bool,
            committed: threading.Event, commit_at: list[float]) -> None:
    with db.transaction() as s:
        if grant:
            s.execute(insert(RoleBindingModel), [{
                "id": f"rb_probe_{user}", "principal_id": user, "created_at": utcnow(),
                "org_id": org, "resource_type": None, "parent_scope_id": None,
                "scope_id": prj, "role_id": "project-viewer"}])
        else:
            s.execute(delete(RoleBindingModel).where(RoleBindingModel.id == f"rb_probe_{user}"))
        bump_policy_version(s, kind="binding", principal_id=user, scope_id=prj)
    commit_at[0] = time.monotonic()
    committed.set()


def run() -> list[Measurement]:
    world = build_world()
    try:
        ours, sliced, whole = compare(world, checks=50_000, sliced_checks=10_000,
                                      cedar_checks=100)
        request, before = per_request(world, checks=20_000)
        changing, delays = during_change(world)
    finally:
        world.cleanup()
    o, c, w = percentiles(ours), percentiles(sliced), percentiles(whole)
    r, b, ch = percentiles(request), percentiles(before), percentiles(changing)
    return [
        Measurement("authorize() p50 (10k projects, 50k bindings)", o["p50"], "µs",
                    "cedarpy p50, policies of the principal and its group", c["p50"],
                    higher_is_better=False),
        Measurement("authorize() p99 (10k projects, 50k bindings)", o["p99"], "µs",
                    "cedarpy p99, policies of the principal and its group", c["p99"],
                    higher_is_better=False, target="<50 µs"),
        Measurement("authorize() p50 vs Cedar over the whole policy set (100 checks)",
                    o["p50"], "µs", "cedarpy p50, whole policy set", w["p50"],
                    higher_is_better=False),
        Measurement("per request: Caller.authorize p50 (freshness check + decision)",
                    r["p50"], "µs", "cedarpy p50, policies of the principal and its group",
                    c["p50"], higher_is_better=False),
        Measurement("per request: Caller.authorize p99 (freshness check + decision)",
                    r["p99"], "µs", "cedarpy p99, policies of the principal and its group",
                    c["p99"], higher_is_better=False, target="<50 µs"),
        Measurement("per request: Caller.authorize p99, watcher vouching",
                    r["p99"], "µs", "version query per request (before; dead watcher)",
                    b["p99"], higher_is_better=False),
        Measurement(f"per request: authorize p99 while a binding change is applied "
                    f"({len(changing)} samples, {len(delays)} changes)", ch["p99"], "µs",
                    "cedarpy p99, policies of the principal and its group", c["p99"],
                    higher_is_better=False, target="<50 µs"),
        Measurement("binding change committed elsewhere -> decided by here (max)",
                    max(delays), "ms", higher_is_better=False, target="<=1000 ms"),
        Measurement("policy snapshot build from the database", world.build_seconds * 1000,
                    "ms", higher_is_better=False),
    ]
