"""Reads of the scope tree by id (what GET /orgs/{id}, /departments/{id} and /projects/{id}
serve): the same as the listings, NotFound for an id that is not there (a scope deleted after
the request's policy snapshot was taken), and in a write transaction they see its own
uncommitted changes. On SQLite and PostgreSQL."""

from __future__ import annotations

import pytest

from aicloud.platform import audit, iam
from aicloud.shared.db import Database
from aicloud.shared.errors import NotFound

ACTOR = audit.Actor.system("test")


def test_reads_by_id(db: Database) -> None:
    with db.transaction() as s:
        org = iam.create_org(s, "o", actor=ACTOR)
        dep = iam.create_department(s, org.id, "d", actor=ACTOR)
        in_dep = iam.create_project(s, name="p1", department_id=dep.id, actor=ACTOR)
        in_org = iam.create_project(s, name="p2", org_id=org.id, actor=ACTOR)
    with db.read_transaction() as s:
        assert iam.get_org(s, org.id) == iam.list_orgs(s, [org.id])[0] == org
        assert iam.get_department(s, dep.id) == iam.list_departments(s, [dep.id])[0] == dep
        for prj in (in_dep, in_org):
            assert iam.get_project(s, prj.id) == iam.list_projects(s, [prj.id])[0] == prj
        assert iam.get_project(s, in_dep.id).scope_path == f"/{org.id}/{dep.id}/{in_dep.id}"
        assert iam.list_projects(s, [in_org.id, "prj_gone", in_dep.id]) == [in_org, in_dep]
        for read, missing in ((iam.get_org, "org_gone"), (iam.get_department, "dep_gone"),
                              (iam.get_project, "prj_gone")):
            with pytest.raises(NotFound):
                read(s, missing)
    with db.transaction() as s:
        iam.rename_project(s, in_org.id, "renamed", actor=ACTOR)
        assert iam.get_project(s, in_org.id).name == "renamed"
        assert iam.list_projects(s, [in_org.id])[0].name == "renamed"
