"""50 concurrent clients against a real API server: authenticated reads vs /healthz.

A real ``aicloud api`` process (uvicorn on a socket, the production server configuration,
no controllers) on a fresh SQLite file and on a fresh PostgreSQL database, with 50 users each
holding an API key (project-viewer on one project). The load comes from other processes:
``wrk`` (2 threads, 50 connections, a Lua script rotating the 50 tokens per request) when it
is installed (``make bench`` installs it: bench/install-wrk.sh), else 2 Python client
processes of 25 keep-alive connections each, one token per connection (slower; said so).

Per backend, in the same run: a short warm-up, then ``GET /healthz`` (no database: the
baseline) and authenticated ``GET /projects/{id}`` for AICLOUD_BENCH_LOAD_SECONDS (default 20)
each. Reported: throughput, p50, p99 (p95 when fewer than 10,000 samples), errors (non-2xx,
socket errors and timeouts). Target (issue 11): 0 errors, p99 < 500 ms and within 2.5x of
/healthz's p99, throughput >= 40% of /healthz's.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from aicloud.platform import audit, iam
from aicloud.shared.db import Database
from bench.dbs import each_database
from bench.harness import Measurement, percentiles

CLIENTS = 50
SECONDS = float(os.environ.get("AICLOUD_BENCH_LOAD_SECONDS", "20"))
WARMUP_SECONDS = min(3.0, SECONDS / 4)
ACTOR = audit.Actor.system("bench")
WRK_SCRIPT = Path(__file__).with_name("api_load.lua")


@dataclass
class Load:
    """One endpoint's run under load (times in seconds)."""

    requests: int
    seconds: float
    errors: int
    p50: float
    p95: float
    p99: float | None  # None below 10,000 samples

    @property
    def throughput(self) -> float:
        return self.requests / self.seconds


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _world(db: Database) -> tuple[str, list[str]]:
    """A project and 50 users who may read it, each with an API key."""
    with db.transaction() as s:
        org = iam.create_org(s, "load", actor=ACTOR)
        prj = iam.create_project(s, name="load", org_id=org.id, actor=ACTOR)
        secrets = []
        for i in range(CLIENTS):
            user = iam.create_user(s, email=f"load{i}@example.org")
            iam.create_binding(s, prj.id, iam.RoleBindingCreate(
                principal_id=user.id, role_id="project-viewer"), actor=ACTOR, grantor=None)
            secrets.append(iam.create_api_key(s, user.id, iam.ApiKeyCreate(name="load"),
                                              actor=ACTOR, grantor=None).secret)
    return prj.id, secrets


@contextmanager
def _api_server(db: Database, workdir: Path) -> Iterator[str]:
    """``aicloud api`` in its own process, as an operator starts it."""
    port = _free_port()
    env = {**os.environ, "AICLOUD_DATABASE_URL": db.url, "AICLOUD_AUDIT_ANCHOR_SINK": "",
           "AICLOUD_BOOTSTRAP_ADMIN_ENABLED": "false", "AICLOUD_LOG_LEVEL": "WARNING",
           "AICLOUD_PROVIDERS__LOCAL_ROOT": str(workdir / "workloads")}
    log = (workdir / "server.log").open("w")
    proc = subprocess.Popen([sys.executable, "-m", "aicloud.cli", "api", "--profile", "dev",
                             "--host", "127.0.0.1", "--port", str(port)],
                            cwd=workdir, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"aicloud api exited: {(workdir / 'server.log').read_text()}")
            try:
                if httpx.get(url + "/readyz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("aicloud api did not become ready in 90 s")
            time.sleep(0.2)
        yield url
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


# --- load generators ------------------------------------------------------------------------


def _wrk(url: str, path: str, tokens: list[str], seconds: float, workdir: Path) -> Load:
    token_file = workdir / "tokens.txt"
    token_file.write_text("".join(t + "\n" for t in tokens))
    out = subprocess.run(
        ["wrk", "-t2", f"-c{CLIENTS}", f"-d{max(1, round(seconds))}s", "--timeout", "10s",
         "-s", str(WRK_SCRIPT), url, "--", str(token_file), path],
        capture_output=True, text=True, timeout=seconds + 60, check=True).stdout
    line = next(x for x in out.splitlines() if x.startswith("AICLOUD "))
    n, micros, connect, read, write, status, timeout, p50, p95, p99 = line.split()[1:]
    requests = int(n)
    return Load(requests=requests, seconds=int(micros) / 1e6,
                errors=sum(int(x) for x in (connect, read, write, status, timeout)),
                p50=float(p50) / 1e6, p95=float(p95) / 1e6,
                p99=float(p99) / 1e6 if requests >= 10_000 else None)


async def _connections(url: str, path: str, tokens: list[str], stop: float
                       ) -> tuple[list[float], int]:
    latencies: list[float] = []
    errors = 0

    async def one(token: str | None) -> None:
        nonlocal errors
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        async with httpx.AsyncClient(base_url=url, headers=headers, timeout=10) as c:
            while time.monotonic() < stop:
                t0 = time.perf_counter()
                try:
                    ok = (await c.get(path)).status_code < 400
                except httpx.HTTPError:
                    ok = False
                latencies.append(time.perf_counter() - t0)
                errors += not ok

    await asyncio.gather(*(one(t) for t in tokens))
    return latencies, errors


def _client_process(args: tuple[str, str, list[str], float]) -> tuple[list[float], int]:
    url, path, tokens, stop_in = args
    return asyncio.run(_connections(url, path, tokens, time.monotonic() + stop_in))


def _python_clients(url: str, path: str, tokens: list[str], seconds: float) -> Load:
    procs = 2
    per = [[tokens[i] for i in range(j, CLIENTS, procs)] for j in range(procs)]
    with multiprocessing.get_context("spawn").Pool(procs) as pool:
        t0 = time.monotonic()
        parts = pool.map(_client_process, [(url, path, p, seconds) for p in per])
        elapsed = time.monotonic() - t0
    latencies = [x for lat, _ in parts for x in lat]
    q = percentiles(latencies)
    return Load(requests=len(latencies), seconds=min(elapsed, seconds + 1),
                errors=sum(e for _, e in parts), p50=q["p50"], p95=q["p95"], p99=q.get("p99"))


def _load(url: str, path: str, tokens: list[str], seconds: float, workdir: Path) -> Load:
    if shutil.which("wrk"):
        return _wrk(url, path, tokens, seconds, workdir)
    return _python_clients(url, path, tokens, seconds)


# --- the benchmark --------------------------------------------------------------------------


def _measure(backend: str, db: Database) -> list[Measurement]:
    project_id, tokens = _world(db)
    with tempfile.TemporaryDirectory() as d, _api_server(db, Path(d)) as url:
        workdir = Path(d)
        path = f"/projects/{project_id}"
        _load(url, path, tokens, WARMUP_SECONDS, workdir)
        health = _load(url, "/healthz", [""] * CLIENTS, SECONDS, workdir)
        ours = _load(url, path, tokens, SECONDS, workdir)
    tool = "wrk" if shutil.which("wrk") else "python clients (wrk missing)"
    label = f"{backend}, {CLIENTS} clients, {tool}"
    q = "p99" if ours.p99 is not None and health.p99 is not None else "p95"
    ours_q = ours.p99 if q == "p99" else ours.p95
    health_q = health.p99 if q == "p99" else health.p95
    return [
        Measurement(f"GET /projects/{{id}} throughput ({label})", ours.throughput, "req/s",
                    "GET /healthz", health.throughput, higher_is_better=True,
                    target=">= 0.40x of /healthz"),
        Measurement(f"GET /projects/{{id}} {q} ({label})", ours_q * 1000, "ms",
                    f"GET /healthz {q}", health_q * 1000, higher_is_better=False,
                    target="p99 < 500 ms and ratio >= 0.40 (within 2.5x)"),
        Measurement(f"GET /projects/{{id}} p50 ({label})", ours.p50 * 1000, "ms",
                    "GET /healthz p50", health.p50 * 1000, higher_is_better=False),
        Measurement(f"GET /projects/{{id}} errors ({label})", ours.errors, "errors",
                    "GET /healthz errors", health.errors, higher_is_better=False,
                    target="0"),
    ]


def run() -> list[Measurement]:
    results: list[Measurement] = []
    with each_database() as dbs:
        for backend, db in dbs:
            results += _measure(backend, db)
    return results


# A quick look: AICLOUD_BENCH_LOAD_SECONDS=5 .venv/bin/python -m bench.bench_api_load
if __name__ == "__main__":
    for m in run():
        print(f"{m.name}: {m.value:,.1f} {m.unit} (baseline {m.baseline_name}: "
              f"{m.baseline_value:,.1f}; target {m.target})")
