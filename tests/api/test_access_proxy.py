"""The app proxy and API endpoints end to end: a real API server on a socket with its
controllers and embedded node agent, real sandboxed workloads of the local provider (the
built-in web-app and api-app templates), real HTTP and WebSocket clients.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import tracemalloc
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect as ws_connect

from aicloud.platform import audit, billing, iam
from aicloud.runtime import build_context
from aicloud.shared.db import Database
from tests.conftest import LiveServer, free_port, make_settings

PASSWORD = "correct horse battery staple"
STATIC_8_H100 = {"source": "static", "simulated": True, "static_gpus": [
    {"index": i, "model": "H100", "memory_gib": 80} for i in range(8)]}


class World:
    def __init__(self, live: LiveServer, http: httpx.Client, project_id: str, org_id: str,
                 token: str):
        self.live, self.http, self.project_id, self.org_id = live, http, project_id, org_id
        self.token = token
        self.launched: list[str] = []

    def user(self, email: str, role: str | None) -> str:
        """A user's session token, bound to ``role`` on the project (or nowhere)."""
        user = _ok(self.http.post("/users", json={"email": email, "password": PASSWORD}))
        if role:
            _ok(self.http.post(f"/scopes/{self.project_id}/bindings",
                               json={"principal_id": user["id"], "role_id": role}))
        return str(_ok(self.http.post("/auth/login", json={
            "email": email, "password": PASSWORD}))["token"])

    def launch(self, template: str) -> dict[str, Any]:
        inst = _ok(self.http.post(f"/projects/{self.project_id}/instances", json={
            "name": template, "instance_type": "gpu.h100.1x", "template": template}))
        self.launched.append(inst["id"])
        return _wait(self.http, inst["id"], {"running", "failed"})


@pytest.fixture
def world(db: Database, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[World]:
    marker = request.node.get_closest_marker("access_settings")
    settings = make_settings(db, controller_interval_seconds=0.2,
                             providers={"compute": "local", "inventory": STATIC_8_H100,
                                        "local_root": str(tmp_path / "workloads")},
                             access={"upstream_timeout_seconds": 2.0,
                                     "meter_flush_seconds": 0.5,
                                     **(marker.kwargs if marker else {})})
    ctx = build_context(settings, db)
    ctx.run_agent = True
    with db.transaction() as s:
        iam.bootstrap_admin(s, email="root@example.org", password=PASSWORD)
    with LiveServer(ctx, run_controllers=True) as live, httpx.Client(base_url=live.url,
                                                                      timeout=20) as http:
        token = http.post("/auth/login", json={"email": "root@example.org",
                                               "password": PASSWORD}).json()["token"]
        http.headers["Authorization"] = f"Bearer {token}"
        org = _ok(http.post("/orgs", json={"name": "acme"}))
        dep = _ok(http.post(f"/orgs/{org['id']}/departments", json={"name": "research"}))
        prj = _ok(http.post(f"/departments/{dep['id']}/projects", json={"name": "llm"}))
        with db.transaction() as s:
            billing.top_up(s, actor=audit.Actor(id="user_test"), org_id=org["id"],
                           amount=50_000_000, currency="USD", idempotency_key="access")
        w = World(live, http, prj["id"], org["id"], token)
        try:
            yield w
        finally:  # no workload outlives its test
            for iid in w.launched:
                http.post(f"/instances/{iid}/stop", json={"reason": "test over"})
            for iid in w.launched:
                if http.get(f"/instances/{iid}").status_code != 404:  # its project may be gone
                    _wait(http, iid, {"stopped", "failed", "succeeded", "lost"})


def _ok(resp: httpx.Response) -> Any:
    assert resp.status_code in (200, 201), (resp.status_code, resp.text)
    return resp.json()


def _wait(http: httpx.Client, instance_id: str, states: set[str],
          timeout: float = 30) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        inst = _ok(http.get(f"/instances/{instance_id}"))
        if inst["state"] in states:
            assert inst["state"] == "running" or "running" not in states, inst["state_reason"]
            return inst  # type: ignore[no-any-return]
        assert time.monotonic() < deadline, inst
        time.sleep(0.1)


def _until_serving(client: httpx.Client, url: str, **kw: Any) -> httpx.Response:
    """The workload is running; its server may need a moment to listen."""
    deadline = time.monotonic() + 15
    while True:
        resp = client.get(url, **kw)
        if resp.status_code != 502 or time.monotonic() > deadline:
            return resp
        time.sleep(0.1)


def test_web_app_through_the_proxy(db: Database, world: World) -> None:
    inst = world.launch("web-app")
    iid, prefix = inst["id"], f"/apps/{inst['id']}"
    base = world.live.url
    # A browser: the session cookie only, as after logging in on the platform.
    with httpx.Client(base_url=base, timeout=20, cookies={
            "aicloud_session": world.token, "other": "kept"}) as browser:
        moved = browser.get(prefix)
        assert moved.status_code == 308 and moved.headers["location"] == prefix + "/"
        page = _until_serving(browser, prefix + "/")
        assert page.status_code == 200, page.text
        assert iid in page.text and f"<td>{prefix}</td>" in page.text  # X-Forwarded-Prefix
        # Path mode sandboxes the app's pages (an opaque origin: no platform session for
        # their scripts).
        assert page.headers["content-security-policy"].startswith("sandbox ")

        # The app's absolute redirect (/landing) stays under the prefix; followed.
        landed = browser.get(prefix + "/redirect", follow_redirects=True)
        assert landed.status_code == 200 and landed.text == "landed\n"
        assert landed.history[0].headers["location"] == prefix + "/landing"
        assert str(landed.url).endswith(prefix + "/landing")

        # What the workload receives: no platform credential, our forwarding headers.
        seen = browser.get(prefix + "/headers?x=1", headers={
            "Authorization": f"Bearer {world.token}", "X-Forwarded-For": "6.6.6.6",
            "X-Forwarded-Prefix": "/evil"}).json()
        headers = {k.lower(): v for k, v in seen["headers"]}
        assert seen["path"] == "/headers?x=1"
        assert "authorization" not in headers
        assert world.token not in str(seen)
        assert headers["cookie"] == "other=kept"
        assert headers["x-forwarded-prefix"] == prefix
        assert headers["x-forwarded-for"] == "127.0.0.1"
        assert headers["x-forwarded-proto"] == "http"

        # Cookies stay under the prefix; one named like the platform's session never passes.
        cookie = browser.get(prefix + "/cookie")
        assert cookie.headers.get_list("set-cookie") == [f"app_pref=dark; Path={prefix}/"]

        # 20 MB streamed: many chunks, and the proxy never holds the body.
        tracemalloc.start()
        try:
            tracemalloc.reset_peak()
            total = chunks = 0
            with browser.stream("GET", prefix + "/download?mb=20") as resp:
                assert resp.status_code == 200
                assert resp.headers["content-length"] == str(20 * 1024 * 1024)
                for chunk in resp.iter_raw():
                    total += len(chunk)
                    chunks += 1
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert total == 20 * 1024 * 1024 and chunks > 20
        assert peak < 8 * 1024 * 1024, f"{peak / 2**20:.1f} MiB allocated at once"

    # WebSocket echo, with the session cookie as a browser sends it.
    ws_url = base.replace("http", "ws", 1) + prefix + "/ws"
    with ws_connect(ws_url, additional_headers={"Cookie": f"aicloud_session={world.token}"},
                    compression=None, max_size=2**22) as ws:
        ws.send("hello")
        assert ws.recv(timeout=10) == "hello"
        big = bytes(range(256)) * 800  # 200 KiB, several upstream frames' worth
        ws.send(big)
        assert ws.recv(timeout=10) == big

    # Opening is audited once per session, not per request.
    with db.engine.connect() as c:
        opens = c.execute(sa.text("SELECT actor_id, target_id FROM audit_events WHERE "
                                  "action = 'access.app.open'")).all()
    assert len(opens) == 1 and opens[0].target_id == iid


def test_who_may_open_an_app(world: World) -> None:
    inst = world.launch("web-app")
    prefix = f"/apps/{inst['id']}/"
    outsider = world.user("eve@example.org", None)
    viewer = world.user("vic@example.org", "project-viewer")
    member = world.user("meg@example.org", "project-member")
    with httpx.Client(base_url=world.live.url, timeout=20) as anon:
        first = _until_serving(anon, prefix, headers={"Authorization": f"Bearer {member}"})
        assert first.status_code == 200, first.text
        assert anon.get(prefix).status_code == 401
        hidden = anon.get(prefix, headers={"Authorization": f"Bearer {outsider}"})
        assert hidden.status_code == 404 and inst["id"] not in hidden.text.replace(prefix, "")
        assert anon.get(prefix, headers={"Authorization": f"Bearer {viewer}"}
                        ).status_code == 403
        unknown = anon.get("/apps/inst_01HZZZZZZZZZZZZZZZZZZZZZZZ/",
                           headers={"Authorization": f"Bearer {member}"})
        assert unknown.status_code == 404
        huge = anon.get(prefix, headers={"Authorization": f"Bearer {member}",
                                         "X-Big": "x" * 20_000})
        assert huge.status_code == 431
    ws_url = world.live.url.replace("http", "ws", 1) + prefix + "ws"
    with pytest.raises(InvalidStatus):
        ws_connect(ws_url, additional_headers={"Authorization": f"Bearer {outsider}"})
    with pytest.raises(InvalidStatus):  # cross-site WebSocket hijacking
        ws_connect(ws_url, additional_headers={"Cookie": f"aicloud_session={member}"},
                   origin="http://evil.example")  # type: ignore[arg-type]
    # A stopped instance: 409 with its state.
    _ok(world.http.post(f"/instances/{inst['id']}/stop", json={"reason": "done"}))
    _wait(world.http, inst["id"], {"stopped"})
    time.sleep(2.1)  # the proxy's cache of the instance
    stopped = httpx.get(world.live.url + prefix, headers={"Authorization": f"Bearer {member}"})
    assert stopped.status_code == 409 and stopped.json()["state"] == "stopped"


def test_api_endpoint_keys_limits_and_billing(db: Database, world: World) -> None:
    api = world.launch("api-app")
    web = world.launch("web-app")
    http, prj = world.http, world.project_id
    ep = _ok(http.post(f"/projects/{prj}/endpoints",
                       json={"name": "echo", "resource_id": api["id"]}))
    assert ep["path"] == "/endpoints/echo/"
    assert http.post(f"/projects/{prj}/endpoints", json={
        "name": "echo", "resource_id": api["id"]}).status_code == 409
    assert http.post(f"/projects/{prj}/endpoints", json={
        "name": "web", "resource_id": web["id"]}).status_code == 422
    limited = _ok(http.post(f"/api-endpoints/{ep['id']}/keys", json={
        "name": "small", "rate_limit_requests": 5, "rate_limit_window_seconds": 60}))
    big = _ok(http.post(f"/api-endpoints/{ep['id']}/keys", json={
        "name": "big", "rate_limit_requests": 10_000, "rate_limit_window_seconds": 1}))
    listed = _ok(http.get(f"/api-endpoints/{ep['id']}/keys"))["items"]
    assert {k["name"] for k in listed} == {"small", "big"}
    assert all("secret" not in k for k in listed)

    served = {"2xx": 0, "4xx": 0}
    with httpx.Client(base_url=world.live.url + "/endpoints/echo", timeout=20) as c:
        auth = {"Authorization": f"Bearer {big['secret']}"}
        first = _until_serving(c, "/healthz", headers=auth)
        assert first.status_code == 200
        served["2xx"] += 1
        for i in range(40):
            r = c.post("/v1/echo", json={"i": i}, headers=auth)
            assert r.status_code == 200 and r.json() == {"echo": {"i": i}}
            served["2xx"] += 1
        missing = c.get("/v1/nothing", headers={"X-Api-Key": big["secret"]})
        assert missing.status_code == 404
        served["4xx"] += 1
        assert c.get("/v1/info").status_code == 401
        assert c.get("/v1/info", headers={"Authorization": "Bearer aiep_nope"}
                     ).status_code == 401
        assert c.get("/v1/info", headers={"Authorization": f"Bearer {world.token}"}
                     ).status_code == 401
        # The small key: 5 at once, then 429 with Retry-After.
        small = {"Authorization": f"Bearer {limited['secret']}"}
        codes = [c.get("/v1/info", headers=small).status_code for _ in range(7)]
        assert codes == [200] * 5 + [429] * 2
        served["2xx"] += 5
        refused = c.get("/v1/info", headers=small)
        assert refused.status_code == 429 and int(refused.headers["retry-after"]) >= 1
        assert refused.json()["type"].endswith("too-many-requests")
        # Revoked: refused at once.
        _ok(http.post(f"/endpoint-keys/{big['id']}/revoke"))
        assert c.get("/v1/info", headers=auth).status_code == 401
        other = _ok(http.post(f"/api-endpoints/{ep['id']}/keys", json={"name": "slow"}))
        slow = c.get("/v1/sleep?seconds=4", headers={
            "Authorization": f"Bearer {other['secret']}"})
        assert slow.status_code == 504 and slow.json()["type"].endswith("gateway-timeout")
    assert httpx.get(world.live.url + "/endpoints/nope/x").status_code == 404

    # Billed = served: every request the workload answered, by status class, once.
    deadline = time.monotonic() + 10
    while True:
        billing.rate_until_idle(db, settle_seconds=10)
        with db.engine.connect() as c2:
            rows = dict(c2.execute(sa.text(
                "SELECT dimension_value, sum(quantity) FROM billing_usage_records WHERE "
                "meter = 'endpoint_requests' GROUP BY dimension_value")).all())
        if rows == {"2xx": served["2xx"], "4xx": served["4xx"], "5xx": 1}:
            break
        assert time.monotonic() < deadline, (rows, served)
        time.sleep(0.2)
    # (the 504 is metered as 5xx, priced 0)
    with db.engine.connect() as c2:
        charged = c2.scalar(sa.text("SELECT coalesce(sum(charge), 0) FROM "
                                    "billing_usage_records WHERE meter = 'endpoint_requests'"))
    assert charged == 100 * (served["2xx"] + served["4xx"])  # the seeded default prices

    # A published endpoint keeps its project: with every instance ended, deleting (or moving)
    # the project is still refused, naming the endpoint, until it is unpublished.
    for inst in (api, web):
        _ok(http.post(f"/instances/{inst['id']}/stop", json={"reason": "done"}))
        _wait(http, inst["id"], {"stopped"})
    refused_delete = http.delete(f"/projects/{prj}")
    assert refused_delete.status_code == 409, refused_delete.text
    assert [r["id"] for r in refused_delete.json()["live_resources"]] == [ep["id"]]

    # Unpublish: gone, and the name is free again.
    assert http.delete(f"/api-endpoints/{ep['id']}").status_code == 204
    assert httpx.get(world.live.url + "/endpoints/echo/v1/info", headers={
        "Authorization": f"Bearer {other['secret']}"}).status_code == 404
    with db.engine.connect() as c2:
        actions = [r[0] for r in c2.execute(sa.text(
            "SELECT action FROM audit_events WHERE action LIKE 'access.endpoint%' "
            "ORDER BY position"))]
    assert actions == ["access.endpoint.publish", "access.endpoint_key.create",
                       "access.endpoint_key.create", "access.endpoint_key.revoke",
                       "access.endpoint_key.create", "access.endpoint.unpublish"]
    assert http.delete(f"/projects/{prj}").status_code == 204


@contextmanager
def _api_process(db: Database, workdir: Path, name: str) -> Iterator[str]:
    """``aicloud api`` in its own process, as an API replica runs."""
    port = free_port()
    env = {**os.environ, "AICLOUD_DATABASE_URL": db.url, "AICLOUD_AUDIT_ANCHOR_SINK": "",
           "AICLOUD_BOOTSTRAP_ADMIN_ENABLED": "false", "AICLOUD_LOG_LEVEL": "WARNING",
           "AICLOUD_ACCESS__METER_FLUSH_SECONDS": "0.5",
           "AICLOUD_PROVIDERS__LOCAL_ROOT": str(workdir / "unused")}
    log = (workdir / f"{name}.log").open("w")
    proc = subprocess.Popen([sys.executable, "-m", "aicloud.cli", "api", "--profile", "dev",
                             "--host", "127.0.0.1", "--port", str(port)], cwd=workdir,
                            env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, (workdir / f"{name}.log").read_text()
            try:
                if httpx.get(url + "/readyz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "aicloud api did not start"
            time.sleep(0.2)
        yield url
    finally:
        proc.send_signal(signal.SIGINT)  # a clean stop bills what it served
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def test_two_api_processes_share_a_key_rate_limit(db: Database, world: World,
                                                  tmp_path: Path) -> None:
    """Two `aicloud api` processes on one database: a key's limit holds across both
    (leases of the shared bucket), and each process bills exactly what it served."""
    api = world.launch("api-app")
    ep = _ok(world.http.post(f"/projects/{world.project_id}/endpoints",
                             json={"name": "shared", "resource_id": api["id"]}))
    key = _ok(world.http.post(f"/api-endpoints/{ep['id']}/keys", json={
        "name": "shared", "rate_limit_requests": 20, "rate_limit_window_seconds": 3600}))
    auth = {"Authorization": f"Bearer {key['secret']}"}
    # The workload's server is up (checked without spending the key's tokens).
    deadline = time.monotonic() + 15
    while True:
        try:
            if httpx.get(api["endpoint_url"] + "/healthz", timeout=5).status_code == 200:
                break
        except httpx.TransportError:  # pasta accepts before the server listens
            pass
        assert time.monotonic() < deadline
        time.sleep(0.1)
    with _api_process(db, tmp_path, "a") as a, _api_process(db, tmp_path, "b") as b:
        def call(i: int) -> int:
            url = (a if i % 2 else b) + "/endpoints/shared/v1/info"
            return httpx.get(url, headers=auth, timeout=20).status_code

        with ThreadPoolExecutor(8) as pool:
            codes = list(pool.map(call, range(60)))
    assert codes.count(200) == 20 and codes.count(429) == 40, codes
    with db.engine.connect() as c:
        billed = c.scalar(sa.text(
            "SELECT coalesce(sum(quantity), 0) FROM billing_usage_records WHERE "
            "meter = 'endpoint_requests' AND resource_id = :ep"), {"ep": ep["id"]})
    assert billed == 20


@pytest.mark.access_settings(apps_host_suffix="apps.test")
def test_subdomain_mode(world: World) -> None:
    """Each app on its own origin: the API host hands over with a ticket, the app host
    sets its own cookie, and serves the app (never the API) at /."""
    inst = world.launch("web-app")
    iid = inst["id"]
    port = world.live.url.rsplit(":", 1)[1]
    app_host = f"{iid.lower()}.apps.test:{port}"
    with httpx.Client(base_url=world.live.url, timeout=20) as c:
        entry = c.get(f"/apps/{iid}/landing",
                      headers={"Cookie": f"aicloud_session={world.token}"})
        assert entry.status_code == 303, entry.text
        ticket_url = httpx.URL(entry.headers["location"])
        assert ticket_url.host == f"{iid.lower()}.apps.test" and \
            ticket_url.path == "/_aicloud/auth"
        on_app = {"Host": app_host}
        # Without the app's cookie the app host serves nothing, and never the API.
        assert c.get("/", headers=on_app).status_code == 401
        assert c.get("/projects", headers=on_app).status_code == 401
        assert c.get(f"{ticket_url.path}?ticket=forged", headers=on_app).status_code == 401
        traded = c.get(f"{ticket_url.path}?{ticket_url.query.decode()}", headers=on_app)
        assert traded.status_code == 303 and traded.headers["location"] == "/landing"
        cookie = traded.headers["set-cookie"]
        assert cookie.startswith("aicloud_app=") and "HttpOnly" in cookie
        app_cookie = cookie.split(";", 1)[0].split("=", 1)[1]
        with_cookie = {**on_app, "Cookie": f"aicloud_app={app_cookie}"}
        page = _until_serving(c, "/", headers=with_cookie)
        assert page.status_code == 200 and iid in page.text
        assert "content-security-policy" not in page.headers  # its own origin: no sandbox
        assert c.get("/redirect", headers=with_cookie).headers["location"] == "/landing"
        # The cookie is for this app's host only.
        other = world.launch("web-app")
        other_host = {"Host": f"{other['id'].lower()}.apps.test:{port}"}
        assert c.get("/", headers={**other_host, "Cookie": f"aicloud_app={app_cookie}"}
                     ).status_code == 401
