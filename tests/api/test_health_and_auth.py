"""Health, readiness, metrics and login over a real socket."""

from __future__ import annotations

import httpx

from aicloud.platform import iam
from aicloud.runtime import AppContext, build_context
from aicloud.shared.db import Database
from tests.conftest import LiveServer, make_settings


def test_health_ready_metrics(live_server: LiveServer) -> None:
    assert httpx.get(live_server.url + "/healthz").json()["status"] == "ok"
    ready = httpx.get(live_server.url + "/readyz")
    assert ready.status_code == 200 and ready.json()["migrations"] == "head"
    metrics = httpx.get(live_server.url + "/metrics")
    assert metrics.headers["content-type"].startswith("text/plain")
    assert 'aicloud_http_requests_total{method="GET",route="/readyz",status="200"} 1.0' \
        in metrics.text
    assert httpx.get(live_server.url + "/docs").status_code == 200


def test_readyz_is_503_when_schema_is_behind(tmp_path) -> None:  # type: ignore[no-untyped-def]
    db = Database(f"sqlite:///{tmp_path / 'unmigrated.db'}")
    ctx = build_context(make_settings(db), db)
    with LiveServer(ctx) as server:
        resp = httpx.get(server.url + "/readyz")
    assert resp.status_code == 503
    assert "aicloud db upgrade" in resp.json()["detail"]


def test_login_me_logout(ctx: AppContext, live_server: LiveServer) -> None:
    with ctx.db.transaction() as s:
        iam.create_user(s, email="Ada@Example.org", password="correct horse battery")
    url = live_server.url
    resp = httpx.post(url + "/auth/login",
                      json={"email": "ada@example.org", "password": "correct horse battery"})
    assert resp.status_code == 200
    token = resp.json()["token"]
    cookie = resp.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=lax" in cookie
    auth = {"Authorization": f"Bearer {token}"}
    assert httpx.get(url + "/auth/me", headers=auth).json()["email"] == "ada@example.org"
    assert httpx.post(url + "/auth/logout", headers=auth).status_code == 204
    after = httpx.get(url + "/auth/me", headers=auth)
    assert after.status_code == 401 and after.json()["type"].endswith("unauthenticated")


def test_login_failures_do_not_reveal_which_part_was_wrong(
    ctx: AppContext, live_server: LiveServer
) -> None:
    with ctx.db.transaction() as s:
        iam.create_user(s, email="bob@example.org", password="correct horse battery")
    wrong_pw = httpx.post(live_server.url + "/auth/login",
                          json={"email": "bob@example.org", "password": "nope"})
    no_user = httpx.post(live_server.url + "/auth/login",
                         json={"email": "nobody@example.org", "password": "nope"})
    assert wrong_pw.status_code == no_user.status_code == 401
    assert wrong_pw.json()["detail"] == no_user.json()["detail"]


def test_requests_without_token_are_401(live_server: LiveServer) -> None:
    resp = httpx.get(live_server.url + "/auth/me")
    assert resp.status_code == 401 and resp.headers["www-authenticate"] == "Bearer"
    bad = httpx.get(live_server.url + "/auth/me", headers={"Authorization": "Bearer aics_x"})
    assert bad.status_code == 401
