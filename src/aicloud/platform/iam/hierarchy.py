"""Organizations → departments (optional) → projects; the scope tree every decision walks."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Select, bindparam, delete, select
from sqlalchemy.orm import Session

from aicloud.platform import audit
from aicloud.platform.iam.authorize import PLATFORM, ResourceRef, Target
from aicloud.platform.iam.deletion_guards import lock_org_tree, refuse_if_live
from aicloud.platform.iam.models import (
    DenyBindingModel,
    DepartmentModel,
    GroupModel,
    InvitationModel,
    OrganizationModel,
    ProjectModel,
    RoleBindingModel,
    RoleModel,
    ServiceAccountModel,
)
from aicloud.platform.iam.policy_version import bump_policy_version
from aicloud.platform.iam.schemas import Department, Organization, Project
from aicloud.shared.clock import utcnow
from aicloud.shared.db.bulk import in_values
from aicloud.shared.errors import Conflict, NotFound, ValidationFailed
from aicloud.shared.ids import id_prefix, new_id


def org_model_to_org(m: OrganizationModel) -> Organization:
    return Organization(id=m.id, name=m.name, created_at=m.created_at)


def department_model_to_department(m: DepartmentModel) -> Department:
    return Department(id=m.id, org_id=m.org_id, name=m.name, created_at=m.created_at)


def project_model_to_project(m: ProjectModel) -> Project:
    return Project(id=m.id, org_id=m.org_id, department_id=m.department_id, name=m.name,
                   scope_path=_project_path(m), created_at=m.created_at)


def _project_path(m: ProjectModel) -> str:
    return f"/{m.org_id}/{m.department_id}/{m.id}" if m.department_id else f"/{m.org_id}/{m.id}"


def scope_path(session: Session, target: Target) -> str:
    """``/org_x/dep_y/prj_z`` for a scope or resource (``/`` for the platform), read from the
    database so it is right inside the transaction that changes the tree."""
    if isinstance(target, ResourceRef):
        return f"{scope_path(session, target.project_id)}/{target.id}"
    if target == PLATFORM:
        return "/"
    prefix = id_prefix(target)
    if prefix == "org" and session.get(OrganizationModel, target):
        return f"/{target}"
    if prefix == "dep":
        dep = session.get(DepartmentModel, target)
        if dep:
            return f"/{dep.org_id}/{dep.id}"
    if prefix == "prj":
        prj = session.get(ProjectModel, target)
        if prj:
            return _project_path(prj)
    raise NotFound(f"scope {target} not found")


def scope_org(session: Session, scope_id: str) -> str | None:
    """The organization a scope belongs to (None for the platform)."""
    path = scope_path(session, scope_id)
    return path.split("/")[1] or None


# --- organizations ---------------------------------------------------------------------------


def get_org_model(session: Session, org_id: str) -> OrganizationModel:
    m = session.get(OrganizationModel, org_id)
    if m is None:
        raise NotFound(f"organization {org_id} not found")
    return m


def create_org(session: Session, name: str, *, actor: audit.Actor) -> Organization:
    now = utcnow()
    m = OrganizationModel(id=new_id("org"), name=name, created_at=now, updated_at=now)
    session.add(m)
    session.flush()
    bump_policy_version(session)
    audit.record(session, actor=actor, action="iam.org.create", target_type="organization",
                 target_id=m.id, scope_path=f"/{m.id}", changes=audit.diff(None, {"name": name}))
    return org_model_to_org(m)


def rename_org(session: Session, org_id: str, name: str, *, actor: audit.Actor) -> Organization:
    m = get_org_model(session, org_id)
    old = m.name
    m.name, m.updated_at = name, utcnow()
    audit.record(session, actor=actor, action="iam.org.update", target_type="organization",
                 target_id=m.id, scope_path=f"/{m.id}",
                 changes=audit.diff({"name": old}, {"name": name}))
    return org_model_to_org(m)


def delete_org(session: Session, org_id: str, *, actor: audit.Actor) -> None:
    """Only an empty organization (no departments, projects, service accounts or live product
    resources) goes. The org tree lock orders it with concurrent creates and launches."""
    lock_org_tree(session, org_id)
    m = get_org_model(session, org_id)
    refuse_if_live(session, f"/{org_id}", f"organization {org_id}")
    for model, what in ((DepartmentModel, "departments"), (ProjectModel, "projects"),
                        (ServiceAccountModel, "service accounts")):
        if session.scalar(select(model.id).where(model.org_id == org_id).limit(1)):
            raise Conflict(f"the organization still has {what}; delete them first")
    _delete_bindings_at(session, [org_id])
    for model in (InvitationModel, GroupModel, RoleModel):
        session.execute(delete(model).where(model.org_id == org_id))
    session.delete(m)
    bump_policy_version(session)
    audit.record(session, actor=actor, action="iam.org.delete", target_type="organization",
                 target_id=org_id, scope_path=f"/{org_id}",
                 changes=audit.diff({"name": m.name}, None))


def list_orgs(session: Session, ids: Sequence[str]) -> list[Organization]:
    return [org_model_to_org(m) for m in _by_ids(session, OrganizationModel, ids)]


# The reads of the scope tree by id: statements built once, on the tables. Building a
# statement per call, and the ORM's loading of rows into instances, cost a GET of one project
# more than its query (issue 11). The rows read like the models (m.id, m.name, ...) in the
# converters above.
_TREE = (OrganizationModel, DepartmentModel, ProjectModel)
_BY_IDS = {m: select(m.__table__).where(in_values(m.__table__.c.id, "ids")) for m in _TREE}
_BY_ID = {m: select(m.__table__).where(m.__table__.c.id == bindparam("id")) for m in _TREE}


def _rows(session: Session, statement: Select, params: dict[str, Any]) -> Any:  # type: ignore[type-arg]
    session.flush()  # as the ORM's autoflush would: a write transaction reads its own changes
    return session.execute(statement, params)


def _by_ids(session: Session, model: type, ids: Sequence[str]) -> list[Any]:
    if not ids:
        return []
    rows = {r.id: r for r in _rows(session, _BY_IDS[model], {"ids": list(ids)})}
    return [rows[i] for i in ids if i in rows]


def _by_id(session: Session, model: type, id_: str, what: str) -> Any:
    row = _rows(session, _BY_ID[model], {"id": id_}).first()
    if row is None:
        raise NotFound(f"{what} {id_} not found")
    return row


def get_org(session: Session, org_id: str) -> Organization:
    return org_model_to_org(_by_id(session, OrganizationModel, org_id, "organization"))


def _delete_bindings_at(session: Session, scope_ids: list[str]) -> None:
    for model in (RoleBindingModel, DenyBindingModel):
        session.execute(delete(model).where(model.scope_id.in_(scope_ids)))
        session.execute(delete(model).where(model.parent_scope_id.in_(scope_ids)))


# --- departments -----------------------------------------------------------------------------


def get_department_model(session: Session, department_id: str) -> DepartmentModel:
    m = session.get(DepartmentModel, department_id)
    if m is None:
        raise NotFound(f"department {department_id} not found")
    return m


def create_department(session: Session, org_id: str, name: str, *,
                      actor: audit.Actor) -> Department:
    lock_org_tree(session, org_id)  # a concurrent delete_org sees it, or it sees the org gone
    get_org_model(session, org_id)
    now = utcnow()
    m = DepartmentModel(id=new_id("dep"), org_id=org_id, name=name, created_at=now,
                        updated_at=now)
    session.add(m)
    session.flush()
    bump_policy_version(session)
    audit.record(session, actor=actor, action="iam.department.create",
                 target_type="department", target_id=m.id, scope_path=f"/{org_id}/{m.id}",
                 changes=audit.diff(None, {"name": name, "org_id": org_id}))
    return department_model_to_department(m)


def rename_department(session: Session, department_id: str, name: str, *,
                      actor: audit.Actor) -> Department:
    m = get_department_model(session, department_id)
    old = m.name
    m.name, m.updated_at = name, utcnow()
    audit.record(session, actor=actor, action="iam.department.update",
                 target_type="department", target_id=m.id, scope_path=f"/{m.org_id}/{m.id}",
                 changes=audit.diff({"name": old}, {"name": name}))
    return department_model_to_department(m)


def delete_department(session: Session, department_id: str, *, actor: audit.Actor) -> None:
    """Only an empty department (no projects, no live product resources) goes."""
    lock_org_tree(session, get_department_model(session, department_id).org_id)
    m = get_department_model(session, department_id)  # read again under the lock
    refuse_if_live(session, f"/{m.org_id}/{m.id}", f"department {m.id}")
    if session.scalar(select(ProjectModel.id).where(ProjectModel.department_id == m.id)
                      .limit(1)):
        raise Conflict("the department still has projects; move or delete them first")
    _delete_bindings_at(session, [m.id])
    session.delete(m)
    bump_policy_version(session)
    audit.record(session, actor=actor, action="iam.department.delete",
                 target_type="department", target_id=m.id, scope_path=f"/{m.org_id}/{m.id}",
                 changes=audit.diff({"name": m.name}, None))


def get_department(session: Session, department_id: str) -> Department:
    return department_model_to_department(
        _by_id(session, DepartmentModel, department_id, "department"))


def list_departments(session: Session, ids: Sequence[str]) -> list[Department]:
    return [department_model_to_department(m) for m in _by_ids(session, DepartmentModel, ids)]


# --- projects --------------------------------------------------------------------------------


def get_project_model(session: Session, project_id: str) -> ProjectModel:
    m = session.get(ProjectModel, project_id)
    if m is None:
        raise NotFound(f"project {project_id} not found")
    return m


def create_project(session: Session, *, name: str, org_id: str | None = None,
                   department_id: str | None = None, actor: audit.Actor) -> Project:
    """Under a department, or directly under an organization."""
    if department_id is not None:
        # Under the org tree lock a concurrent delete of the department (or org) either
        # finished (404 here) or waits and then sees this project.
        lock_org_tree(session, get_department_model(session, department_id).org_id)
        org_id = get_department_model(session, department_id).org_id
    elif org_id is None:
        raise ValidationFailed("a project needs an organization or a department")
    else:
        lock_org_tree(session, org_id)
        get_org_model(session, org_id)
    now = utcnow()
    m = ProjectModel(id=new_id("prj"), org_id=org_id, department_id=department_id, name=name,
                     created_at=now, updated_at=now)
    session.add(m)
    session.flush()
    bump_policy_version(session)
    audit.record(session, actor=actor, action="iam.project.create", target_type="project",
                 target_id=m.id, scope_path=_project_path(m),
                 changes=audit.diff(None, {"name": name, "org_id": org_id,
                                           "department_id": department_id}))
    return project_model_to_project(m)


def rename_project(session: Session, project_id: str, name: str, *,
                   actor: audit.Actor) -> Project:
    m = get_project_model(session, project_id)
    old = m.name
    m.name, m.updated_at = name, utcnow()
    audit.record(session, actor=actor, action="iam.project.update", target_type="project",
                 target_id=m.id, scope_path=_project_path(m),
                 changes=audit.diff({"name": old}, {"name": name}))
    return project_model_to_project(m)


def move_project(session: Session, project_id: str, department_id: str | None, *,
                 actor: audit.Actor) -> Project:
    """Move a project to another department of its organization (or directly under it).
    Inherited access changes with the next decision: the policy version moves with it.

    Refused (409) while a product has live resources in it: they were admitted, and are
    counted for quotas and budgets, under the old path; moving them would take them out of
    the old department's limits without passing the new one's."""
    lock_org_tree(session, get_project_model(session, project_id).org_id)
    m = get_project_model(session, project_id)  # read again under the lock
    refuse_if_live(session, _project_path(m), f"project {m.id}", retry="move it")
    if department_id is not None:
        dep = get_department_model(session, department_id)
        if dep.org_id != m.org_id:
            raise NotFound(f"department {department_id} not found")
    old = {"department_id": m.department_id, "scope_path": _project_path(m)}
    m.department_id, m.updated_at = department_id, utcnow()
    session.flush()
    bump_policy_version(session)
    audit.record(session, actor=actor, action="iam.project.move", target_type="project",
                 target_id=m.id, scope_path=_project_path(m),
                 changes=audit.diff(old, {"department_id": department_id,
                                          "scope_path": _project_path(m)}))
    return project_model_to_project(m)


def delete_project(session: Session, project_id: str, *, actor: audit.Actor) -> None:
    """Refused (409) while a product still has live resources in the project: the deletion
    guards are asked under the org tree lock, which launches take too (see deletion_guards)."""
    lock_org_tree(session, get_project_model(session, project_id).org_id)
    m = get_project_model(session, project_id)  # read again under the lock
    refuse_if_live(session, _project_path(m), f"project {m.id}")
    if session.scalar(select(ServiceAccountModel.id)
                      .where(ServiceAccountModel.project_id == m.id).limit(1)):
        raise Conflict("the project still has service accounts; delete them first")
    path = _project_path(m)
    _delete_bindings_at(session, [m.id])
    session.delete(m)
    bump_policy_version(session)
    audit.record(session, actor=actor, action="iam.project.delete", target_type="project",
                 target_id=m.id, scope_path=path, changes=audit.diff({"name": m.name}, None))


def get_project(session: Session, project_id: str) -> Project:
    return project_model_to_project(_by_id(session, ProjectModel, project_id, "project"))


def list_projects(session: Session, ids: Sequence[str]) -> list[Project]:
    return [project_model_to_project(m) for m in _by_ids(session, ProjectModel, ids)]
