"""Deleting a scope never leaves instances running without it: a project, department or org
with a live instance is refused (409 naming it), on SQLite and PostgreSQL, also when the launch
and the delete run at the same time in two transactions."""

from __future__ import annotations

import pytest
from sqlalchemy.orm import Session

from aicloud.platform import billing, iam
from aicloud.products import gpuaas
from aicloud.runtime import products as _composed  # noqa: F401 (registers the deletion guards)
from aicloud.shared.db import Database
from aicloud.shared.errors import Conflict, NotFound
from tests.products.gpuaas.world import ADMIN, World, make_world, second_waits_for_first


def _department_of(w: World) -> str:
    return w.scope_path.split("/")[2]


def test_a_live_instance_refuses_deleting_its_project_department_and_org(db: Database) -> None:
    w = make_world(db)
    w.add_node("n1", gpus=2)
    inst = w.launch("busy")
    w.schedule()
    for delete, target in ((iam.delete_project, w.project_id),
                           (iam.delete_department, _department_of(w)),
                           (iam.delete_org, w.org_id)):
        with pytest.raises(iam.ScopeNotEmpty) as e, db.transaction() as s:
            delete(s, target, actor=ADMIN)
        assert e.value.extra["live_resources"] == [{
            "kind": "gpuaas.instance", "id": inst.id, "state": "scheduled",
            "scope_path": w.scope_path}]
        assert inst.id in e.value.detail
    assert w.get(inst.id).state == "scheduled"  # nothing was touched


def test_once_its_instances_ended_the_project_goes_and_their_history_stays(
        db: Database) -> None:
    w = make_world(db)
    w.add_node("n1", gpus=2)
    inst = w.launch("done")
    w.stop(inst.id)
    with db.transaction() as s:
        iam.delete_project(s, w.project_id, actor=ADMIN)
    # The ended instance's row, its transitions and its voided hold are kept: history and
    # billing evidence of an org outlive the project (see README, GPUaaS).
    ended = w.get(inst.id)
    assert ended.state == "stopped" and [t.to_state for t in ended.transitions] == [
        "requested", "admitted", "stopped"]
    with db.transaction() as s:
        m = gpuaas.get_instance_model(s, inst.id)
        assert m.hold_id is not None and billing.get_hold(s, m.hold_id).status == "voided"
    with pytest.raises(NotFound):  # and nothing can be launched into the deleted project
        w.launch("late")


def test_a_delete_racing_a_launch_sees_the_launch_and_refuses(db: Database) -> None:
    w = make_world(db)
    w.add_node("n1", gpus=2)

    def launch(s: Session) -> None:
        gpuaas.launch(s, gpuaas.InstanceLaunch(name="racer", instance_type="gpu.h100.1x"),
                      who=w.who, actor=ADMIN, idempotency_key=None, now=w.clock.now())

    def delete() -> None:
        with db.transaction() as s:
            iam.delete_project(s, w.project_id, actor=ADMIN)
    result = second_waits_for_first(db, launch, delete)
    assert isinstance(result, iam.ScopeNotEmpty), result
    with db.transaction() as s:
        assert iam.scope_path(s, w.project_id) == w.scope_path  # the project is still there


def test_a_launch_racing_a_delete_finds_the_project_gone(db: Database) -> None:
    w = make_world(db)
    w.add_node("n1", gpus=2)

    def delete(s: Session) -> None:
        iam.delete_project(s, w.project_id, actor=ADMIN)

    def launch() -> gpuaas.Instance:
        return w.launch("racer")
    result = second_waits_for_first(db, delete, launch)
    assert isinstance(result, NotFound), result
    with db.transaction() as s:
        assert gpuaas.live_instances(s, w.scope_path) == []


def test_a_department_delete_racing_a_project_create_refuses(db: Database) -> None:
    w = make_world(db)
    with db.transaction() as s:
        iam.delete_project(s, w.project_id, actor=ADMIN)  # the department is empty now
    dep = _department_of(w)

    def create(s: Session) -> None:
        iam.create_project(s, name="new", department_id=dep, actor=ADMIN)

    def delete() -> None:
        with db.transaction() as s:
            iam.delete_department(s, dep, actor=ADMIN)
    result = second_waits_for_first(db, create, delete)
    # A clear refusal, not a foreign-key error (500) nor a project left without department.
    assert isinstance(result, Conflict) and "still has projects" in result.detail, result


def test_a_project_create_racing_a_department_delete_finds_it_gone(db: Database) -> None:
    w = make_world(db)
    with db.transaction() as s:
        iam.delete_project(s, w.project_id, actor=ADMIN)
    dep = _department_of(w)

    def delete(s: Session) -> None:
        iam.delete_department(s, dep, actor=ADMIN)

    def create() -> object:
        with db.transaction() as s:
            return iam.create_project(s, name="new", department_id=dep, actor=ADMIN)
    result = second_waits_for_first(db, delete, create)
    assert isinstance(result, NotFound), result


def test_an_org_delete_racing_a_launch_sees_the_launch(db: Database) -> None:
    """The org's guards run under the same lock: the racing launch is named in the refusal."""
    w = make_world(db)
    w.add_node("n1", gpus=2)
    launched: list[str] = []

    def launch(s: Session) -> None:
        launched.append(gpuaas.launch(
            s, gpuaas.InstanceLaunch(name="racer", instance_type="gpu.h100.1x"),
            who=w.who, actor=ADMIN, idempotency_key=None, now=w.clock.now()).id)

    def delete() -> None:
        with db.transaction() as s:
            iam.delete_org(s, w.org_id, actor=ADMIN)
    result = second_waits_for_first(db, launch, delete)
    assert isinstance(result, iam.ScopeNotEmpty), result
    assert [r["id"] for r in result.extra["live_resources"]] == launched


def test_a_project_with_a_live_instance_is_not_moved_out_of_its_limits(db: Database) -> None:
    """Admission counted the instance under the project's path; a move would take it out of
    the department's quota and budget without passing the new place's."""
    w = make_world(db)
    w.add_node("n1", gpus=2)
    inst = w.launch("busy")
    with pytest.raises(iam.ScopeNotEmpty) as e, db.transaction() as s:
        iam.move_project(s, w.project_id, None, actor=ADMIN)
    assert "move it again" in e.value.detail and inst.id in e.value.detail
    with db.transaction() as s:
        assert iam.scope_path(s, w.project_id) == w.scope_path
    w.stop(inst.id)
    with db.transaction() as s:
        iam.move_project(s, w.project_id, None, actor=ADMIN)
        assert iam.scope_path(s, w.project_id) == f"/{w.org_id}/{w.project_id}"


@pytest.mark.parametrize("create", ["service_account", "group", "role", "invitation"])
def test_creating_in_an_org_racing_its_delete_finds_it_gone(db: Database, create: str) -> None:
    """Whatever else an org holds is created under the org tree lock too: a racing delete
    leaves a clear 404, never a foreign-key error (500)."""
    w = make_world(db)
    with db.transaction() as s:
        iam.delete_project(s, w.project_id, actor=ADMIN)
        iam.delete_department(s, _department_of(w), actor=ADMIN)

    def delete(s: Session) -> None:
        iam.delete_org(s, w.org_id, actor=ADMIN)

    def make() -> object:
        with db.transaction() as s:
            if create == "service_account":
                return iam.create_service_account(s, w.org_id, "bot", actor=ADMIN)
            if create == "group":
                return iam.create_group(s, w.org_id, "team", actor=ADMIN)
            if create == "role":
                return iam.create_role(s, w.org_id, iam.RoleCreate(
                    name="reader", permissions=["iam.projects.read"]), actor=ADMIN,
                    grantor=None)
            return iam.create_invitation(s, w.org_id, iam.InvitationCreate(
                email="new@example.com", role_id="org-admin"), actor=ADMIN, grantor=None)
    result = second_waits_for_first(db, delete, make)
    assert isinstance(result, NotFound), result
