"""Launch -> running latency with the local provider, through the whole control plane.

A real API server (uvicorn on a socket) with its controllers and embedded node agent on a
fresh SQLite database, once with the dev profile's polling and once polling every 50 ms;
each of 50 launches is a POST, then GETs every 20 ms until the instance is running; then it
is stopped so the 8 simulated GPUs never run out. Baseline, in the same run: the bare local
provider's create + start of the same workload (the ``shell`` template). Target: p50 < 1 s.
"""

from __future__ import annotations

import socket
import tempfile
import threading
import time
from pathlib import Path

import httpx
import uvicorn

from aicloud.adapters.providers.base import WorkloadKind, WorkloadSpec
from aicloud.adapters.providers.local.provider import LocalProvider
from aicloud.api import create_app
from aicloud.platform import audit, billing, iam
from aicloud.runtime import build_context
from aicloud.shared.config import load_settings
from aicloud.shared.db import Database, migrate
from bench.harness import Measurement, percentiles

N = 50
PASSWORD = "correct horse battery staple"
STATIC_8_H100 = {"source": "static", "simulated": True, "static_gpus": [
    {"index": i, "model": "H100", "memory_gib": 80} for i in range(8)]}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _baseline(root: Path) -> list[float]:
    provider = LocalProvider(root / "bare")
    samples = []
    for i in range(N):
        t0 = time.perf_counter()
        handle = provider.create(WorkloadSpec(workload_id=f"bare{i}", kind=WorkloadKind.SHELL))
        provider.start(handle)
        samples.append(time.perf_counter() - t0)
        provider.stop(handle, grace_seconds=2)
    return samples


def _through_control_plane(root: Path, interval: float | None) -> list[float]:
    """``interval``: the controllers' polling interval; None keeps the dev profile's (the
    scheduler and agent poll every min(interval, 0.5 s))."""
    root = root / f"cp-{interval}"
    root.mkdir()
    db = Database(f"sqlite:///{root / 'bench.db'}")
    migrate.upgrade(db)
    extra = {} if interval is None else {"controller_interval_seconds": interval}
    settings = load_settings("dev", database_url=db.url, **extra,
                             providers={"compute": "local", "inventory": STATIC_8_H100,
                                        "local_root": str(root / "workloads")})
    ctx = build_context(settings, db)
    ctx.run_agent = True
    actor = audit.Actor.system("bench")
    with db.transaction() as s:
        iam.bootstrap_admin(s, email="root@example.org", password=PASSWORD)
        org = iam.create_org(s, "bench", actor=actor)
        prj = iam.create_project(s, name="bench", org_id=org.id, actor=actor)
        billing.top_up(s, actor=actor, org_id=org.id, amount=10**12, currency="USD",
                       idempotency_key="bench")
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(ctx, run_controllers=True),
                                           host="127.0.0.1", port=port, log_config=None,
                                           access_log=False))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.01)
    samples: list[float] = []
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as http:
            token = http.post("/auth/login", json={"email": "root@example.org",
                                                   "password": PASSWORD}).json()["token"]
            http.headers["Authorization"] = f"Bearer {token}"
            while not http.get("/nodes").json():  # the agent's first heartbeat
                time.sleep(0.02)
            for i in range(N):
                t0 = time.perf_counter()
                inst = http.post(f"/projects/{prj.id}/instances", json={
                    "name": f"b{i}", "instance_type": "gpu.h100.1x"}).json()
                while (state := http.get(f"/instances/{inst['id']}").json()["state"]) \
                        != "running":
                    if state in ("failed", "rejected", "lost"):
                        raise RuntimeError(f"instance {inst['id']} ended {state}")
                    time.sleep(0.02)
                samples.append(time.perf_counter() - t0)
                http.post(f"/instances/{inst['id']}/stop")
    finally:
        server.should_exit = True
        thread.join(15)
        provider = LocalProvider(root / "workloads")
        for handle in provider.list_workloads():
            provider.stop(handle, grace_seconds=2)
        db.dispose()
    return samples


def run() -> list[Measurement]:
    with tempfile.TemporaryDirectory() as d:
        root = Path(d)
        root.chmod(0o711)  # the sandbox mounts a workload's dir by path, as the workload's uid
        bare = percentiles(_baseline(root))
        runs = {"dev profile polling (0.5 s)": percentiles(_through_control_plane(root, None)),
                "controllers polling every 50 ms": percentiles(
                    _through_control_plane(root, 0.05))}
    return [
        Measurement(f"launch->running {q}, {label}", found[q] * 1000, "ms",
                    f"bare provider create+start {q}", bare[q] * 1000, higher_is_better=False,
                    target="p50 < 1000 ms" if q == "p50" else None)
        for label, found in runs.items() for q in ("p50", "p95")
    ]
