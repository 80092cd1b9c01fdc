"""End to end on a real HTTP server with its controllers and embedded node agent: log in, top
up, launch a web-app, wait for it to run, fetch from it, stop it, find the exact charge in the
ledger and every step in the audit log. Plus the bad-input answers of the launch route."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from aicloud.platform import audit, billing, iam
from aicloud.products import gpuaas
from aicloud.runtime import build_context
from aicloud.shared.db import Database
from tests.conftest import LiveServer, make_settings

PASSWORD = "correct horse battery staple"
STATIC_8_H100 = {"source": "static", "simulated": True, "static_gpus": [
    {"index": i, "model": "H100", "memory_gib": 80} for i in range(8)]}


@pytest.fixture
def server(db: Database, tmp_path: Path) -> Iterator[tuple[LiveServer, httpx.Client, str]]:
    settings = make_settings(db, controller_interval_seconds=0.2,
                             providers={"compute": "local", "inventory": STATIC_8_H100,
                                        "local_root": str(tmp_path / "workloads")})
    ctx = build_context(settings, db)
    ctx.run_agent = True
    with db.transaction() as s:
        iam.bootstrap_admin(s, email="root@example.org", password=PASSWORD)
    with LiveServer(ctx, run_controllers=True) as live, httpx.Client(base_url=live.url,
                                                                      timeout=10) as http:
        token = http.post("/auth/login", json={"email": "root@example.org",
                                               "password": PASSWORD}).json()["token"]
        http.headers["Authorization"] = f"Bearer {token}"
        org = _ok(http.post("/orgs", json={"name": "acme"}))
        dep = _ok(http.post(f"/orgs/{org['id']}/departments", json={"name": "research"}))
        prj = _ok(http.post(f"/departments/{dep['id']}/projects", json={"name": "llm"}))
        yield live, http, prj["id"]


def _ok(resp: httpx.Response) -> Any:
    assert resp.status_code in (200, 201), (resp.status_code, resp.text)
    return resp.json()


def _wait(http: httpx.Client, instance_id: str, states: set[str],
          timeout: float = 20) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        inst = _ok(http.get(f"/instances/{instance_id}"))
        if inst["state"] in states:
            return inst  # type: ignore[no-any-return]
        assert time.monotonic() < deadline, inst
        time.sleep(0.1)


def test_launch_fetch_stop_charge_audit(db: Database,
                                        server: tuple[LiveServer, httpx.Client, str]) -> None:
    _live, http, project_id = server
    org_id = _ok(http.get(f"/projects/{project_id}"))["org_id"]
    with db.transaction() as s:  # billing routes arrive from another branch
        billing.top_up(s, actor=audit.Actor(id="user_test"), org_id=org_id,
                       amount=50_000_000, currency="USD", idempotency_key="e2e")
    nodes = _ok(http.get("/nodes"))  # the embedded agent registers before the server answers
    assert [(n["simulated"], n["inventory_source"], len(n["gpus"])) for n in nodes] == [
        (True, "static", 8)]
    body = {"name": "notebook", "instance_type": "gpu.h100.1x", "template": "web-app"}
    launched = _ok(http.post(f"/projects/{project_id}/instances", json=body,
                             headers={"Idempotency-Key": "first-launch"}))
    replay = _ok(http.post(f"/projects/{project_id}/instances", json=body,
                           headers={"Idempotency-Key": "first-launch"}))
    assert replay["id"] == launched["id"]
    inst = _wait(http, launched["id"], {"running", "failed"})
    assert inst["state"] == "running", inst["state_reason"]
    page = _fetch(inst["endpoint_url"])
    assert launched["id"] in page and "AI Cloud web app" in page
    time.sleep(1.2)
    _ok(http.post(f"/instances/{inst['id']}/stop", json={"reason": "e2e done"}))
    done = _wait(http, inst["id"], {"stopped", "failed"})
    assert done["state"] == "stopped" and done["state_reason"] == "e2e done"
    assert [t["to_state"] for t in done["transitions"]] == [
        "requested", "admitted", "scheduled", "provisioning", "running", "stopping",
        "stopped"]
    # The charge is the run time, to the second, times the seeded per-second prices.
    run = (_time(done["ended_at"]) - _time(done["started_at"])).total_seconds()
    seconds = int(run)
    assert seconds >= 1
    billing.rate_until_idle(db, settle_seconds=10)  # the server's rater may hold some
    with db.transaction() as s:
        wallet = billing.org_wallet(s, org_id, "USD")
        charged = sum(t.amount for t in billing.list_transfers(s, wallet.id, limit=1000)
                      if t.reason == "usage")
        assert billing.balance(s, wallet.id).held == 0  # the admission hold was released
    assert charged == seconds * (700 + 16 * 10 + 128 * 1)
    prj_path = f"/{org_id}/{_ok(http.get(f'/projects/{project_id}'))['department_id']}/" \
               f"{project_id}"
    events = _ok(http.get("/audit/events", params={"scope": prj_path, "limit": 200,
                                                   "order": "asc"}))["items"]
    actions = [e["action"] for e in events if e["target_id"] == inst["id"]]
    assert actions == ["gpuaas.instance.launch", "gpuaas.instance.admitted",
                       "gpuaas.instance.scheduled", "gpuaas.instance.provisioning",
                       "gpuaas.instance.running", "gpuaas.instance.stop_request",
                       "gpuaas.instance.stopping", "gpuaas.instance.stopped"]
    logs = _ok(http.get(f"/instances/{inst['id']}/logs"))
    assert logs["complete"] is True


def test_bad_launches(db: Database, server: tuple[LiveServer, httpx.Client, str]) -> None:
    _live, http, project_id = server
    url = f"/projects/{project_id}/instances"
    unknown = http.post(url, json={"name": "x", "instance_type": "gpu.z1.1x"})
    assert unknown.status_code == 422 and "unknown instance type" in unknown.json()["detail"]
    # A model no node has is refused at once, not queued forever.
    never = http.post(url, json={"name": "x", "instance_type": "gpu.a100.1x"})
    assert never.status_code == 422, never.text
    assert "no node has GPU model 'A100'" in never.json()["detail"]
    out_of_range = http.post(url, json={"name": "x", "instance_type": "gpu.h100.1x",
                                        "priority": -500})
    assert out_of_range.status_code == 422
    missing = http.post("/projects/prj_01HZZZZZZZZZZZZZZZZZZZZZZZ/instances",
                        json={"name": "x", "instance_type": "gpu.h100.1x"})
    assert missing.status_code == 404
    # A user with no role anywhere cannot tell the project exists.
    _ok(http.post("/users", json={"email": "eve@example.org", "password": PASSWORD}))
    eve = _ok(http.post("/auth/login", json={"email": "eve@example.org",
                                             "password": PASSWORD}))["token"]
    hidden = http.post(url, json={"name": "x", "instance_type": "gpu.h100.1x"},
                       headers={"Authorization": f"Bearer {eve}"})
    assert hidden.status_code == 404, hidden.text


def _time(value: str):  # type: ignore[no-untyped-def]
    from datetime import datetime

    return datetime.fromisoformat(value)


def _fetch(url: str) -> str:
    deadline = time.monotonic() + 10
    while True:
        try:
            resp = httpx.get(url, timeout=2)
            if resp.status_code == 200:
                return resp.text
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, url
        time.sleep(0.05)


def test_gpuaas_is_declared_through_its_manifest() -> None:
    assert {p.name for p in gpuaas.MANIFEST.permissions} <= set(iam.CATALOG.names())
