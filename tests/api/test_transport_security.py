"""TLS, trusted proxies, HSTS, /metrics and docs in strict profiles, over real sockets.

Two ways to satisfy tls_required: the process serves HTTPS itself (a certificate made here),
or it sits behind a proxy at a trusted address. Requests "from the proxy" come from 127.0.0.2
and the others from 127.0.0.1 (both are this machine's loopback), so the server sees two
genuinely different peers.
"""

from __future__ import annotations

import base64
import os
import secrets
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa
import uvicorn

from aicloud.api import create_app
from aicloud.api.server import server_config
from aicloud.platform import iam
from aicloud.runtime import build_context
from aicloud.shared.config import Settings, load_settings
from aicloud.shared.db import Database
from tests.conftest import LiveServer, free_port
from tests.tls_certs import make_self_signed

AICLOUD = [sys.executable, "-m", "aicloud.cli"]
PROXY = "127.0.0.2"
HTTPS = {"X-Forwarded-Proto": "https"}
PASSWORD = "correct horse battery"
ONE_YEAR_HSTS = "max-age=31536000"


def via(address: str) -> httpx.Client:
    """A client whose connections come from ``address``."""
    return httpx.Client(transport=httpx.HTTPTransport(local_address=address), timeout=10)


@pytest.fixture(scope="module")
def cert_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return make_self_signed(tmp_path_factory.mktemp("tls"))


def strict_settings(db: Database, **overrides: object) -> Settings:
    """The prod profile as an operator would run it, on the test's database."""
    values: dict[str, object] = {
        "database_url": db.url, "controllers_enabled": False,
        "secret_key": secrets.token_urlsafe(32), "metrics_token": secrets.token_urlsafe(32),
        "trusted_proxies": [PROXY],
    }
    values.update(overrides)
    return load_settings("prod", **values)


@pytest.fixture
def proxied(sqlite_db: Database) -> Iterator[LiveServer]:
    """A strict server whose TLS is terminated by a proxy at 127.0.0.2."""
    with sqlite_db.transaction() as s:
        iam.create_user(s, email="ada@example.org", password=PASSWORD)
    with LiveServer(build_context(strict_settings(sqlite_db), sqlite_db)) as server:
        yield server


def _login(client: httpx.Client, url: str, **headers: str) -> httpx.Response:
    return client.post(url + "/auth/login", headers=headers,
                       json={"email": "ada@example.org", "password": PASSWORD})


# --- behind a trusted proxy ------------------------------------------------------------------


def test_forwarded_proto_is_believed_only_from_a_trusted_proxy(proxied: LiveServer) -> None:
    with via("127.0.0.1") as stranger, via(PROXY) as proxy:
        spoofed = stranger.get(proxied.url + "/auth/me", headers=HTTPS)
        assert spoofed.status_code == 403
        assert spoofed.json()["type"] == "urn:aicloud:problem:https-required"
        assert "HTTPS only" in spoofed.json()["detail"]
        assert "strict-transport-security" not in spoofed.headers

        forwarded = proxy.get(proxied.url + "/auth/me", headers=HTTPS)
        assert forwarded.status_code == 401  # reached the app, which wants a token
        assert forwarded.headers["strict-transport-security"] == ONE_YEAR_HSTS

        # The proxy itself speaking plain HTTP, or passing on a client's claim it appended
        # "http" to, is plain HTTP.
        for headers in ({}, {"X-Forwarded-Proto": "https, http"},
                        [("X-Forwarded-Proto", "https"), ("X-Forwarded-Proto", "http")]):
            plain = proxy.get(proxied.url + "/auth/me", headers=headers)
            assert plain.status_code == 403 and "strict-transport-security" not in plain.headers


def test_a_trusted_ipv4_proxy_is_recognised_on_a_dual_stack_socket(sqlite_db: Database) -> None:
    """On a dual-stack socket (as handed over by systemd socket activation or `--fd`) the
    server sees IPv4 peers as ::ffff:a.b.c.d."""
    ctx = build_context(strict_settings(sqlite_db), sqlite_db)
    sock = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    sock.bind(("::", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(server_config(create_app(ctx), ctx.settings))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 15
        while not server.started:
            assert time.monotonic() < deadline and thread.is_alive(), "server did not start"
            time.sleep(0.02)
        url = f"http://127.0.0.1:{port}/auth/me"
        with via("127.0.0.1") as stranger, via(PROXY) as proxy:
            assert stranger.get(url, headers=HTTPS).status_code == 403
            forwarded = proxy.get(url, headers=HTTPS)
            assert forwarded.status_code == 401 and "strict-transport-security" in forwarded.headers
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


def test_plain_http_credentials_are_never_processed(
    proxied: LiveServer, sqlite_db: Database
) -> None:
    with via("127.0.0.1") as stranger, via(PROXY) as proxy:
        refused = _login(stranger, proxied.url)
        assert refused.status_code == 403 and "set-cookie" not in refused.headers
        with sqlite_db.engine.connect() as conn:
            assert conn.scalar(sa.text("SELECT count(*) FROM auth_sessions")) == 0

        ok = _login(proxy, proxied.url, **HTTPS)
        assert ok.status_code == 200
        assert ok.headers["strict-transport-security"] == ONE_YEAR_HSTS
        assert "Secure" in ok.headers["set-cookie"]
        # A valid token over plain HTTP is still refused: nothing but HTTPS is served.
        bearer = {"Authorization": f"Bearer {ok.json()['token']}"}
        assert stranger.get(proxied.url + "/auth/me", headers=bearer).status_code == 403
        assert proxy.get(proxied.url + "/auth/me", headers={**bearer, **HTTPS}).status_code == 200


def test_health_probes_answer_plain_http_and_nothing_else_does(proxied: LiveServer) -> None:
    # Kubelets probe the pod directly over HTTP; the probes carry no credentials.
    assert httpx.get(proxied.url + "/healthz").status_code == 200
    assert httpx.get(proxied.url + "/readyz").status_code == 200
    assert httpx.post(proxied.url + "/healthz").status_code == 403
    assert httpx.get(proxied.url + "/metrics").status_code == 403
    assert httpx.get(proxied.url + "/healthz/").status_code == 403


def test_metrics_need_the_operator_token_in_strict_profiles(
    proxied: LiveServer, sqlite_db: Database
) -> None:
    token = proxied.server.config.app.state.context.settings.metrics_token.get_secret_value()
    with via(PROXY) as proxy:
        url = proxied.url + "/metrics"
        assert proxy.get(url, headers=HTTPS).status_code == 401
        wrong = proxy.get(url, headers={**HTTPS, "Authorization": "Bearer " + "x" * 43})
        assert wrong.status_code == 401 and "aicloud_http" not in wrong.text
        # A user's session is not the metrics token.
        session = _login(proxy, proxied.url, **HTTPS).json()["token"]
        as_user = proxy.get(url, headers={**HTTPS, "Authorization": f"Bearer {session}"})
        assert as_user.status_code == 401
        good = proxy.get(url, headers={**HTTPS, "Authorization": f"Bearer {token}"})
        assert good.status_code == 200 and "aicloud_http_requests_total" in good.text


def test_metrics_without_a_configured_token_are_not_served_in_strict_profiles(
    sqlite_db: Database
) -> None:
    ctx = build_context(strict_settings(sqlite_db, metrics_token=None), sqlite_db)
    with LiveServer(ctx) as server, via(PROXY) as proxy:
        resp = proxy.get(server.url + "/metrics", headers=HTTPS)
        assert resp.status_code == 404
        for path in ("/docs", "/redoc", "/openapi.json"):  # strict profiles publish no docs
            assert proxy.get(server.url + path, headers=HTTPS).status_code == 404


def test_forwarded_for_names_the_client_only_through_a_trusted_proxy(sqlite_db: Database) -> None:
    """Where a login came from (kept on the session and in the audit log) is the proxy's
    word only when the proxy is trusted; a client cannot pick its own address."""
    with sqlite_db.transaction() as s:
        iam.create_user(s, email="ada@example.org", password=PASSWORD)
    settings = load_settings("dev", database_url=sqlite_db.url, controllers_enabled=False,
                             trusted_proxies=[PROXY])
    forwarded = {"X-Forwarded-For": "198.51.100.7, 203.0.113.9, 127.0.0.2"}
    with LiveServer(build_context(settings, sqlite_db)) as server, \
            via("127.0.0.1") as stranger, via(PROXY) as proxy:
        assert _login(stranger, server.url, **forwarded).status_code == 200
        assert _login(proxy, server.url, **forwarded).status_code == 200
    with sqlite_db.engine.connect() as conn:
        ips = conn.scalars(sa.text("SELECT ip FROM auth_sessions ORDER BY created_at")).all()
    # 198.51.100.7 is what the client claimed; 203.0.113.9 is who the proxy saw.
    assert ips == ["127.0.0.1", "203.0.113.9"]


def test_dev_stays_plain_http_and_sets_secure_cookies_when_the_login_was_https(
    sqlite_db: Database
) -> None:
    with sqlite_db.transaction() as s:
        iam.create_user(s, email="ada@example.org", password=PASSWORD)
    settings = load_settings("dev", database_url=sqlite_db.url, controllers_enabled=False,
                             trusted_proxies=[PROXY])
    with LiveServer(build_context(settings, sqlite_db)) as server, via(PROXY) as proxy:
        assert server.url.startswith("http://127.0.0.1:")
        plain = _login(proxy, server.url)
        assert plain.status_code == 200 and "Secure" not in plain.headers["set-cookie"]
        assert "strict-transport-security" not in plain.headers  # no HSTS outside strict
        secure = _login(proxy, server.url, **HTTPS)
        assert "Secure" in secure.headers["set-cookie"]
        assert proxy.get(server.url + "/metrics").status_code == 200  # open in dev
        assert proxy.get(server.url + "/docs").status_code == 200


# --- TLS served by the process (`aicloud api --profile prod`) ----------------------------------


def _prod_env(tmp_path: Path, database_url: str, cert: Path, key: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AICLOUD_")}
    env.update({
        "AICLOUD_PROFILE": "prod",
        "AICLOUD_DATABASE_URL": database_url,
        "AICLOUD_SECRET_KEY": secrets.token_urlsafe(32),
        "AICLOUD_AUDIT_SIGNING_KEY": base64.b64encode(secrets.token_bytes(32)).decode(),
        "AICLOUD_TLS_CERT_FILE": str(cert),
        "AICLOUD_TLS_KEY_FILE": str(key),
        "AICLOUD_METRICS_TOKEN": secrets.token_urlsafe(32),
        "AICLOUD_CONFIG_DIR": str(tmp_path / "config"),
        "PYTHONUNBUFFERED": "1",
        "COLUMNS": "200",
    })
    return env


def test_prod_with_a_certificate_serves_https_with_hsts_and_refuses_plain_http(
    migrated_pg_url: str, cert_files: tuple[Path, Path], tmp_path: Path
) -> None:
    # Migrated beforehand: prod migrates explicitly (auto_migrate: false).
    env = _prod_env(tmp_path, migrated_pg_url, *cert_files)
    port = free_port()
    proc = subprocess.Popen([*AICLOUD, "api", "--port", str(port)], env=env, cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    trust = ssl.create_default_context(cafile=str(cert_files[0]))
    https, http = f"https://127.0.0.1:{port}", f"http://127.0.0.1:{port}"
    try:
        with httpx.Client(verify=trust, timeout=10) as client:
            deadline = time.monotonic() + 60
            while True:
                try:
                    health = client.get(https + "/healthz")
                    break
                except httpx.TransportError:
                    if time.monotonic() > deadline or proc.poll() is not None:
                        raise
                    time.sleep(0.2)
            assert health.status_code == 200 and health.json()["profile"] == "prod"
            assert health.headers["strict-transport-security"] == ONE_YEAR_HSTS
            assert "server" not in health.headers
            metrics_token = env["AICLOUD_METRICS_TOKEN"]
            assert client.get(https + "/metrics").status_code == 401
            assert client.get(https + "/metrics", headers={
                "Authorization": f"Bearer {metrics_token}"}).status_code == 200
            assert client.get(https + "/docs").status_code == 404
        # Plain HTTP to the TLS port gets no HTTP answer at all.
        with pytest.raises(httpx.TransportError):
            httpx.get(http + "/healthz", timeout=10)
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=30)
    assert f"AI Cloud API on https://127.0.0.1:{port}" in " ".join(out.split())
    assert "Traceback" not in out


def test_prod_refuses_to_start_on_a_weak_secret_listing_every_problem(
    cert_files: tuple[Path, Path], tmp_path: Path
) -> None:
    env = _prod_env(tmp_path, "postgresql://u@db.internal/aicloud", *cert_files)
    env.update({"AICLOUD_SECRET_KEY": "a" * 32, "AICLOUD_METRICS_PUBLIC": "true"})
    env.pop("AICLOUD_TLS_CERT_FILE")
    env.pop("AICLOUD_TLS_KEY_FILE")
    result = subprocess.run([*AICLOUD, "api"], env=env, capture_output=True, text=True,
                            timeout=120, cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    err = " ".join(result.stderr.split())
    for needle in ("secret_key has an estimated entropy of 0 bits",
                   "nothing provides TLS", "metrics_public is true",
                   "PostgreSQL at db.internal without requiring TLS"):
        assert needle in err, err
    assert "Traceback" not in result.stderr


def test_allowed_hosts_refuse_other_host_names(sqlite_db: Database) -> None:
    settings = load_settings("dev", database_url=sqlite_db.url, controllers_enabled=False,
                             allowed_hosts="127.0.0.1, Cloud.Example.org")
    assert settings.allowed_hosts == ["127.0.0.1", "Cloud.Example.org"]
    with LiveServer(build_context(settings, sqlite_db)) as server:
        url = server.url + "/auth/me"
        assert httpx.get(url).status_code == 401  # Host: 127.0.0.1:<port>
        assert httpx.get(url, headers={"Host": "cloud.example.org"}).status_code == 401
        for host in ("rebound.attacker.example", "127.0.0.1.attacker.example", ""):
            refused = httpx.get(url, headers={"Host": host})
            assert refused.status_code == 400, host
            assert refused.json()["type"] == "urn:aicloud:problem:unknown-host"
        # Probes come with the pod's address as the host.
        assert httpx.get(server.url + "/healthz", headers={"Host": "10.1.2.3"}).status_code == 200
