"""Differential test: authorize() and Cedar (cedarpy) decide the same on a random tree with
group, resource-level and deny bindings (the benchmark's model, at a small size)."""

from __future__ import annotations

from bench.bench_authorize import build_world, compare


def test_authorize_agrees_with_cedar_on_a_random_policy() -> None:
    world = build_world(departments=5, projects=300, users=200, groups=10, bindings=2_000,
                        denies=40, seed=3)
    ours, sliced, full = compare(world, checks=2_000, sliced_checks=300, cedar_checks=200,
                                 seed=5)
    assert (len(ours), len(sliced), len(full)) == (2_000, 300, 200)
    allowed = sum(world.snapshot.authorize(iam_principal(u), "iam.projects.read", p).allowed
                  for u, p in zip(world.users, world.projects, strict=False))
    assert 0 < allowed < len(world.users)  # the sample has both answers, not all-deny


def iam_principal(user_id: str):  # type: ignore[no-untyped-def]
    from aicloud.platform import iam

    return iam.Principal(id=user_id, kind="user")


def test_visible_walks_subtrees_but_agrees_with_checking_every_scope() -> None:
    from aicloud.platform import iam

    world = build_world(departments=5, projects=300, users=100, groups=10, bindings=1_500,
                        denies=40, seed=9)
    snap = world.snapshot
    for user_id in world.users[:60]:
        p = iam.Principal(id=user_id, kind="user")
        for perm, kind in (("iam.projects.read", "project"), ("iam.projects.update", "project"),
                           ("iam.departments.read", "department"), ("iam.orgs.read", "org")):
            brute = [s for s in snap.ids_of_kind(kind) if snap.can(p, perm, s)]
            assert snap.visible(p, perm, kind) == brute, (user_id, perm)
