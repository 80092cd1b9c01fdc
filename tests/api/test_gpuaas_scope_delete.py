"""Over real HTTP: deleting a project whose instance is live answers 409 scope-not-empty naming
it (the instance stays readable and keeps its GPU); once it ended the delete is a 204."""

from __future__ import annotations

import httpx

from aicloud.platform import iam
from aicloud.runtime import build_context
from aicloud.shared.db import Database
from tests.conftest import LiveServer, make_settings
from tests.products.gpuaas.world import make_world

PASSWORD = "correct horse battery staple"


def test_deleting_a_project_with_a_live_instance_is_409_listing_it(db: Database) -> None:
    w = make_world(db)
    w.add_node("n1", gpus=2)
    with db.transaction() as s:
        iam.bootstrap_admin(s, email="root@example.org", password=PASSWORD)
    with LiveServer(build_context(make_settings(db), db)) as live, \
            httpx.Client(base_url=live.url, timeout=10) as http:
        token = http.post("/auth/login", json={"email": "root@example.org",
                                               "password": PASSWORD}).json()["token"]
        http.headers["Authorization"] = f"Bearer {token}"
        r = http.post(f"/projects/{w.project_id}/instances",
                      json={"name": "busy", "instance_type": "gpu.h100.1x"})
        assert r.status_code == 201, r.text
        inst = r.json()["id"]
        w.schedule()
        r = http.delete(f"/projects/{w.project_id}")
        assert r.status_code == 409, r.text
        problem = r.json()
        assert problem["type"].endswith(":scope-not-empty")
        assert [x["id"] for x in problem["live_resources"]] == [inst]
        assert http.get(f"/instances/{inst}").json()["state"] == "scheduled"
        assert http.post(f"/instances/{inst}/stop").json()["state"] == "stopped"
        assert http.delete(f"/projects/{w.project_id}").status_code == 204
