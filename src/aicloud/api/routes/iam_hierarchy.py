"""Organizations, departments and projects."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Response

from aicloud.api.authz import (
    PLATFORM_SCOPE,
    Authenticated,
    Authorize,
    Caller,
    path_param,
)
from aicloud.api.deps import RequestRoute
from aicloud.api.idempotency import Idempotency
from aicloud.api.listing import DEFAULT, Cursor, Limit, page_of_ids
from aicloud.platform import iam
from aicloud.shared.pagination import Page

router = APIRouter(tags=["iam: hierarchy"], route_class=RequestRoute)

ORG = path_param("org_id")
DEP = path_param("department_id")
PRJ = path_param("project_id")


# --- organizations ---------------------------------------------------------------------------


@router.post("/orgs", status_code=201, response_model=iam.Organization)
def create_org(body: iam.OrganizationCreate, idem: Idempotency,
               caller: Annotated[Caller, Authorize("iam.orgs.create", scope=PLATFORM_SCOPE)],
               ) -> Response:
    """Create an organization (platform administrators)."""
    return idem.respond(caller.session, lambda: iam.create_org(
        caller.session, body.name, actor=caller.actor), status_code=201)


@router.get("/orgs", response_model=Page[iam.Organization])
def list_orgs(caller: Authenticated, cursor: Cursor = None,
              limit: Limit = DEFAULT) -> Page[iam.Organization]:
    """The organizations the caller may read."""
    ids, nxt = page_of_ids(caller.visible("iam.orgs.read", "org"), cursor, limit)
    return Page(items=iam.list_orgs(caller.session, ids), next_cursor=nxt)


@router.get("/orgs/{org_id}", response_model=iam.Organization)
def get_org(org_id: str, caller: Annotated[Caller, Authorize("iam.orgs.read", scope=ORG)],
            ) -> iam.Organization:
    return iam.get_org(caller.session, org_id)


@router.patch("/orgs/{org_id}", response_model=iam.Organization)
def update_org(org_id: str, body: iam.NameUpdate,
               caller: Annotated[Caller, Authorize("iam.orgs.update", scope=ORG)],
               ) -> iam.Organization:
    return iam.rename_org(caller.session, org_id, body.name, actor=caller.actor)


@router.delete("/orgs/{org_id}", status_code=204)
def delete_org(org_id: str, caller: Annotated[Caller, Authorize("iam.orgs.delete", scope=ORG)],
               ) -> Response:
    """Delete an empty organization."""
    iam.delete_org(caller.session, org_id, actor=caller.actor)
    return Response(status_code=204)


# --- departments -----------------------------------------------------------------------------


@router.post("/orgs/{org_id}/departments", status_code=201, response_model=iam.Department)
def create_department(org_id: str, body: iam.DepartmentCreate, idem: Idempotency,
                      caller: Annotated[Caller, Authorize("iam.departments.create",
                                                          scope=ORG)]) -> Response:
    return idem.respond(caller.session, lambda: iam.create_department(
        caller.session, org_id, body.name, actor=caller.actor), status_code=201)


@router.get("/orgs/{org_id}/departments", response_model=Page[iam.Department])
def list_departments(org_id: str,
                     caller: Annotated[Caller, Authorize("iam.orgs.read", scope=ORG)],
                     cursor: Cursor = None, limit: Limit = DEFAULT) -> Page[iam.Department]:
    """The organization's departments the caller may read."""
    snap = caller.snapshot()
    ids = [d for d in caller.visible("iam.departments.read", "department")
           if snap.parent.get(d) == org_id]
    page, nxt = page_of_ids(ids, cursor, limit)
    return Page(items=iam.list_departments(caller.session, page), next_cursor=nxt)


@router.get("/departments/{department_id}", response_model=iam.Department)
def get_department(department_id: str,
                   caller: Annotated[Caller, Authorize("iam.departments.read", scope=DEP)],
                   ) -> iam.Department:
    return iam.get_department(caller.session, department_id)


@router.patch("/departments/{department_id}", response_model=iam.Department)
def update_department(department_id: str, body: iam.NameUpdate,
                      caller: Annotated[Caller, Authorize("iam.departments.update",
                                                          scope=DEP)]) -> iam.Department:
    return iam.rename_department(caller.session, department_id, body.name, actor=caller.actor)


@router.delete("/departments/{department_id}", status_code=204)
def delete_department(department_id: str,
                      caller: Annotated[Caller, Authorize("iam.departments.delete",
                                                          scope=DEP)]) -> Response:
    iam.delete_department(caller.session, department_id, actor=caller.actor)
    return Response(status_code=204)


# --- projects --------------------------------------------------------------------------------


@router.post("/orgs/{org_id}/projects", status_code=201, response_model=iam.Project)
def create_org_project(org_id: str, body: iam.ProjectCreate, idem: Idempotency,
                       caller: Annotated[Caller, Authorize("iam.projects.create", scope=ORG)],
                       ) -> Response:
    """Create a project directly under the organization."""
    return idem.respond(caller.session, lambda: iam.create_project(
        caller.session, name=body.name, org_id=org_id, actor=caller.actor), status_code=201)


@router.post("/departments/{department_id}/projects", status_code=201,
             response_model=iam.Project)
def create_department_project(department_id: str, body: iam.ProjectCreate, idem: Idempotency,
                              caller: Annotated[Caller, Authorize("iam.projects.create",
                                                                  scope=DEP)]) -> Response:
    """Create a project in a department."""
    return idem.respond(caller.session, lambda: iam.create_project(
        caller.session, name=body.name, department_id=department_id, actor=caller.actor),
        status_code=201)


@router.get("/projects", response_model=Page[iam.Project])
def list_projects(caller: Authenticated, org_id: str | None = None,
                  department_id: str | None = None, cursor: Cursor = None,
                  limit: Limit = DEFAULT) -> Page[iam.Project]:
    """The projects the caller may read, optionally within one organization or department."""
    snap = caller.snapshot()
    ids = caller.visible("iam.projects.read", "project")
    if org_id or department_id:
        ids = [p for p in ids if (not org_id or org_id in snap.paths[p])
               and (not department_id or department_id in snap.paths[p])]
    page, nxt = page_of_ids(ids, cursor, limit)
    return Page(items=iam.list_projects(caller.session, page), next_cursor=nxt)


@router.get("/projects/{project_id}", response_model=iam.Project)
def get_project(project_id: str,
                caller: Annotated[Caller, Authorize("iam.projects.read", scope=PRJ)],
                ) -> iam.Project:
    return iam.get_project(caller.session, project_id)


@router.patch("/projects/{project_id}", response_model=iam.Project)
def update_project(project_id: str, body: iam.NameUpdate,
                   caller: Annotated[Caller, Authorize("iam.projects.update", scope=PRJ)],
                   ) -> iam.Project:
    return iam.rename_project(caller.session, project_id, body.name, actor=caller.actor)


@router.post("/projects/{project_id}/move", response_model=iam.Project)
def move_project(project_id: str, body: iam.ProjectMove,
                 caller: Annotated[Caller, Authorize("iam.projects.move", scope=PRJ)],
                 ) -> iam.Project:
    """Move the project to another department of its organization (or directly under it);
    the caller must also be allowed to create projects at the destination."""
    org_id = caller.snapshot().org_of(project_id)
    destination = body.department_id or org_id
    assert destination is not None
    if body.department_id is not None and caller.snapshot().parent.get(
            body.department_id) != org_id:
        from aicloud.shared.errors import NotFound

        raise NotFound(f"department {body.department_id} not found")
    caller.require("iam.projects.create", destination)
    return iam.move_project(caller.session, project_id, body.department_id, actor=caller.actor)


@router.delete("/projects/{project_id}", status_code=204)
def delete_project(project_id: str,
                   caller: Annotated[Caller, Authorize("iam.projects.delete", scope=PRJ)],
                   ) -> Response:
    iam.delete_project(caller.session, project_id, actor=caller.actor)
    return Response(status_code=204)
