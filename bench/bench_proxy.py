"""An API endpoint through the proxy vs the workload directly, at 32 concurrent clients.

Real processes on a fresh SQLite file: ``aicloud serve`` (controllers and the embedded node
agent) runs one sandboxed ``api-app`` instance, published as ``/endpoints/bench/`` with one
key whose limit never binds; a separate ``aicloud api`` process (as an API replica runs,
no controllers) serves the proxy. Load: ``wrk`` (2 threads, 32 connections; the same
request, ``GET /v1/info`` with the key's Authorization header, to both) or, without wrk,
Python clients (said so).

In the same run: the workload directly (its loopback port, what pasta forwards into its
sandbox: the baseline) and ``/endpoints/bench/v1/info`` through the API process for
AICLOUD_BENCH_LOAD_SECONDS each. Reported: throughput, p99 (p95 below 10,000 samples),
p50, errors. Targets (issue 12): throughput >= 0.5x of direct; p99 added < 5 ms.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from aicloud.platform import audit, billing, iam
from aicloud.shared.db import Database
from bench import bench_api_load as load
from bench.dbs import sqlite_database
from bench.harness import Measurement

CLIENTS = 32
SECONDS = float(os.environ.get("AICLOUD_BENCH_LOAD_SECONDS", "20"))
WARMUP_SECONDS = min(3.0, SECONDS / 4)
ACTOR = audit.Actor.system("bench")
PASSWORD = "bench-password-not-secret"


def _env(db: Database, workdir: Path) -> dict[str, str]:
    return {**os.environ, "AICLOUD_DATABASE_URL": db.url, "AICLOUD_AUDIT_ANCHOR_SINK": "",
            "AICLOUD_BOOTSTRAP_ADMIN_ENABLED": "false", "AICLOUD_LOG_LEVEL": "WARNING",
            "AICLOUD_PROVIDERS__LOCAL_ROOT": str(workdir / "workloads"),
            "AICLOUD_PROVIDERS__LOCAL_SANDBOX": "bwrap"}


@contextmanager
def _process(command: str, db: Database, workdir: Path, name: str) -> Iterator[str]:
    port = load._free_port()
    log = (workdir / f"{name}.log").open("w")
    proc = subprocess.Popen([sys.executable, "-m", "aicloud.cli", command, "--profile", "dev",
                             "--host", "127.0.0.1", "--port", str(port)],
                            cwd=workdir, env=_env(db, workdir), stdout=log,
                            stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"aicloud {command} exited: "
                                   f"{(workdir / f'{name}.log').read_text()}")
            try:
                if httpx.get(url + "/readyz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"aicloud {command} did not become ready in 90 s")
            time.sleep(0.2)
        yield url
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def _world(db: Database) -> tuple[str, str]:
    """A funded project and its owner's login."""
    email = "bench@example.org"
    with db.transaction() as s:
        org = iam.create_org(s, "bench", actor=ACTOR)
        prj = iam.create_project(s, name="bench", org_id=org.id, actor=ACTOR)
        user = iam.create_user(s, email=email, password=PASSWORD)
        iam.create_binding(s, org.id, iam.RoleBindingCreate(
            principal_id=user.id, role_id="org-owner"), actor=ACTOR, grantor=None)
        billing.top_up(s, actor=ACTOR, org_id=org.id, amount=1_000_000_000, currency="USD",
                       idempotency_key="bench-proxy")
    return prj.id, email


def _ok(resp: httpx.Response) -> dict[str, object]:
    assert resp.status_code in (200, 201), (resp.status_code, resp.text)
    return resp.json()  # type: ignore[no-any-return]


def _launch_and_publish(url: str, project_id: str, email: str) -> tuple[str, str, str]:
    """(instance id, the workload's own URL, the endpoint key's secret)."""
    with httpx.Client(base_url=url, timeout=30) as http:
        token = _ok(http.post("/auth/login", json={"email": email, "password": PASSWORD}))
        http.headers["Authorization"] = f"Bearer {token['token']}"
        inst = _ok(http.post(f"/projects/{project_id}/instances", json={
            "name": "bench", "instance_type": "gpu.h100.1x", "template": "api-app"}))
        deadline = time.monotonic() + 60
        while inst["state"] != "running":
            assert inst["state"] not in ("failed", "stopped", "lost"), inst
            assert time.monotonic() < deadline, inst
            time.sleep(0.2)
            inst = _ok(http.get(f"/instances/{inst['id']}"))
        ep = _ok(http.post(f"/projects/{project_id}/endpoints",
                           json={"name": "bench", "resource_id": inst["id"]}))
        key = _ok(http.post(f"/api-endpoints/{ep['id']}/keys", json={
            "name": "bench", "rate_limit_requests": 10_000_000,
            "rate_limit_window_seconds": 1}))
        direct = str(inst["endpoint_url"])
        deadline = time.monotonic() + 20
        while True:  # its server listens a moment after it runs
            try:
                if httpx.get(direct + "/healthz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline
            time.sleep(0.1)
        return str(inst["id"]), direct, str(key["secret"])


def _stop(url: str, email: str, instance_id: str) -> None:
    with httpx.Client(base_url=url, timeout=30) as http:
        token = _ok(http.post("/auth/login", json={"email": email, "password": PASSWORD}))
        http.headers["Authorization"] = f"Bearer {token['token']}"
        http.post(f"/instances/{instance_id}/stop", json={"reason": "bench over"})
        deadline = time.monotonic() + 30
        while _ok(http.get(f"/instances/{instance_id}"))["state"] not in (
                "stopped", "failed", "lost") and time.monotonic() < deadline:
            time.sleep(0.2)


def _measure(db: Database) -> list[Measurement]:
    project_id, email = _world(db)
    with tempfile.TemporaryDirectory() as d:
        workdir = Path(d)
        workdir.chmod(0o711)  # sandboxed workloads pass through to their own dirs
        with _process("serve", db, workdir, "serve") as serve_url:
            instance_id, direct, secret = _launch_and_publish(serve_url, project_id, email)
            try:
                with _process("api", db, workdir, "api") as api_url:
                    tokens = [secret] * CLIENTS
                    proxied = "/endpoints/bench/v1/info"
                    probe = httpx.get(api_url + proxied, timeout=10,
                                      headers={"Authorization": f"Bearer {secret}"})
                    assert probe.status_code == 200, probe.text
                    load._load(api_url, proxied, tokens, WARMUP_SECONDS, workdir)
                    load._load(direct, "/v1/info", tokens, WARMUP_SECONDS, workdir)
                    base = load._load(direct, "/v1/info", tokens, SECONDS, workdir)
                    ours = load._load(api_url, proxied, tokens, SECONDS, workdir)
            finally:
                _stop(serve_url, email, instance_id)
    tool = "wrk" if shutil.which("wrk") else "python clients (wrk missing)"
    label = f"sqlite, {CLIENTS} clients, {tool}"
    q = "p99" if ours.p99 is not None and base.p99 is not None else "p95"
    ours_q = ours.p99 if q == "p99" else ours.p95
    base_q = base.p99 if q == "p99" else base.p95
    assert ours_q is not None and base_q is not None
    return [
        Measurement(f"/endpoints/{{name}} throughput ({label})", ours.throughput, "req/s",
                    "workload directly", base.throughput, higher_is_better=True,
                    target=">= 0.5x of direct"),
        Measurement(f"/endpoints/{{name}} {q} added ({label})", (ours_q - base_q) * 1000,
                    "ms", None, None, higher_is_better=False, target="< 5 ms"),
        Measurement(f"/endpoints/{{name}} {q} ({label})", ours_q * 1000, "ms",
                    f"workload directly {q}", base_q * 1000, higher_is_better=False),
        Measurement(f"/endpoints/{{name}} p50 ({label})", ours.p50 * 1000, "ms",
                    "workload directly p50", base.p50 * 1000, higher_is_better=False),
        Measurement(f"/endpoints/{{name}} errors ({label})", ours.errors, "errors",
                    "workload directly errors", base.errors, higher_is_better=False,
                    target="0"),
    ]


def run() -> list[Measurement]:
    shared = load.CLIENTS  # the shared load generators' connection count
    load.CLIENTS = CLIENTS
    try:
        with sqlite_database() as db:
            return _measure(db)
    finally:
        load.CLIENTS = shared


# A quick look: AICLOUD_BENCH_LOAD_SECONDS=5 .venv/bin/python -m bench.bench_proxy
if __name__ == "__main__":
    for m in run():
        base = "" if m.baseline_value is None else \
            f" (baseline {m.baseline_name}: {m.baseline_value:,.2f})"
        print(f"{m.name}: {m.value:,.2f} {m.unit}{base}; target {m.target}; "
              f"load {os.getloadavg()[0]:.2f}")
