"""Admission under concurrency, over real HTTP: 50 launches of 1 GPU at once against a quota of
10 GPUs admit exactly 10 and refuse 40 with the quota problem, never a 500. On PostgreSQL the
launches go to TWO `aicloud api` processes sharing the database (the org tree lock is a
database lock, not a process one); on SQLite to one server."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from aicloud.platform import audit, iam, policy
from aicloud.runtime import build_context
from aicloud.shared.db import Database
from tests.conftest import LiveServer, free_port, make_settings
from tests.products.gpuaas.world import World, make_world

PASSWORD = "correct horse battery staple"
ADMIN_EMAIL = "root@example.org"
LAUNCHES, QUOTA = 50, 10


def _prepare(db: Database) -> tuple[World, list[str]]:
    """A project with a quota of 10 GPUs, a node with H100s (nothing schedules: every admitted
    launch stays queued and counts), a funded wallet, and one API key per launch (one token
    for all would serialize the requests on its session row and hide the race)."""
    w = make_world(db)
    w.add_node("n1", gpus=8)
    with db.transaction() as s:
        policy.set_quota(s, actor=audit.Actor(id="user_admin"), scope_path=w.scope_path,
                         resource_key="gpu", limit=QUOTA)
        admin = iam.bootstrap_admin(s, email=ADMIN_EMAIL, password=PASSWORD).user
        keys = [iam.create_api_key(s, admin.id, iam.ApiKeyCreate(name=f"k{i}"),
                                   actor=audit.Actor(id=admin.id), grantor=None).secret
                for i in range(LAUNCHES)]
    return w, keys


def _storm(urls: list[str], project_id: str, keys: list[str]) -> Counter[tuple[int, str]]:
    """LAUNCHES launches at once, spread over ``urls``; (status, problem code) of each."""
    clients = [httpx.Client(base_url=u, timeout=30) for u in urls]

    def one(i: int) -> tuple[int, str]:
        r = clients[i % len(clients)].post(f"/projects/{project_id}/instances", headers={
            "Authorization": f"Bearer {keys[i]}"}, json={
            "name": f"race-{i}", "instance_type": "gpu.h100.1x", "template": "shell"})
        code = "" if r.status_code == 201 else str(r.json()["type"]).rpartition(":")[2]
        return r.status_code, code
    try:
        with ThreadPoolExecutor(LAUNCHES) as pool:
            return Counter(pool.map(one, range(LAUNCHES)))
    finally:
        for c in clients:
            c.close()


def _assert_exactly_quota(outcomes: Counter[tuple[int, str]], w: World) -> None:
    assert outcomes == {(201, ""): QUOTA, (409, "quota-exceeded"): LAUNCHES - QUOTA}, outcomes
    with w.db.transaction() as s:
        from aicloud.products import gpuaas
        admitted = gpuaas.list_instances(s, project_id=w.project_id, limit=100)
    assert len(admitted) == QUOTA and {i.state for i in admitted} == {"admitted"}


def _env(url: str) -> dict[str, str]:
    e = {k: v for k, v in os.environ.items() if not k.startswith("AICLOUD_")}
    e.update(AICLOUD_DATABASE_URL=url, AICLOUD_BOOTSTRAP_ADMIN_ENABLED="false",
             PYTHONUNBUFFERED="1")
    return e


@pytest.fixture
def two_api_processes(migrated_pg_url: str,
                      tmp_path: Path) -> Iterator[tuple[list[str], World, list[str]]]:
    db = Database(migrated_pg_url)
    w, keys = _prepare(db)
    ports = [free_port(), free_port()]
    procs = [subprocess.Popen([sys.executable, "-m", "aicloud.cli", "api", "--host",
                               "127.0.0.1", "--port", str(p)], env=_env(migrated_pg_url),
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
             for p in ports]
    urls = [f"http://127.0.0.1:{p}" for p in ports]
    try:
        deadline = time.monotonic() + 30
        for url, proc in zip(urls, procs, strict=True):
            while True:
                assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
                try:
                    if httpx.get(f"{url}/healthz", timeout=1).status_code < 500:
                        break
                except httpx.TransportError:
                    pass
                assert time.monotonic() < deadline, f"{url} did not start"
                time.sleep(0.1)
        yield urls, w, keys
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(20)
        db.dispose()


def test_two_api_processes_admit_exactly_the_quota_on_postgresql(
        two_api_processes: tuple[list[str], World, list[str]]) -> None:
    urls, w, keys = two_api_processes
    _assert_exactly_quota(_storm(urls, w.project_id, keys), w)


def test_one_server_admits_exactly_the_quota_on_sqlite(sqlite_db: Database) -> None:
    w, keys = _prepare(sqlite_db)
    with LiveServer(build_context(make_settings(sqlite_db), sqlite_db)) as live:
        outcomes = _storm([live.url], w.project_id, keys)
    _assert_exactly_quota(outcomes, w)
