"""Two nodes that reach the control plane only through its API, as real processes on real
sockets, on PostgreSQL: one `aicloud serve` (API + controllers, no embedded agent) and two
`aicloud agent --url --token --state-dir` with separate workload roots.

Mid-run an agent is killed with SIGKILL and restarted (it reuses its credential), then the
API is: the instances keep running (started once, never restarted), and the usage charged
when they stop equals their run time times the price: nothing lost, nothing twice. Finally
a node's credential is revoked: its agent is refused and exits."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
from sqlalchemy import func, select

from aicloud.platform import audit, billing
from aicloud.platform.billing.models import UsageRecordModel
from aicloud.products import gpuaas
from aicloud.products.gpuaas.models import InstanceModel, NodeModel, TransitionModel
from aicloud.shared.clock import FakeClock
from aicloud.shared.db import Database, migrate
from tests.conftest import free_port
from tests.products.gpuaas.world import make_world, per_second_charge

AICLOUD = [sys.executable, "-m", "aicloud.cli"]
TIMEOUT = 20  # node heartbeat timeout (and lease TTL) of every process below


def _env(url: str, tmp: Path, **extra: str) -> dict[str, str]:
    e = {k: v for k, v in os.environ.items() if not k.startswith("AICLOUD_")}
    e.update(AICLOUD_DATABASE_URL=url, AICLOUD_AUDIT_ANCHOR_SINK=f"dir:{tmp / 'anchors'}",
             AICLOUD_PROVIDERS__INVENTORY__SOURCE="static", AICLOUD_AGENT_EMBEDDED="false",
             AICLOUD_NODE_HEARTBEAT_TIMEOUT_SECONDS=str(TIMEOUT),
             AICLOUD_USAGE_REPORT_INTERVAL_SECONDS="4",
             AICLOUD_CONTROLLER_INTERVAL_SECONDS="0.2", AICLOUD_BOOTSTRAP_ADMIN_ENABLED="false",
             PYTHONUNBUFFERED="1", **extra)
    return e


def _until(cond: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def _healthy(url: str) -> bool:
    try:
        return httpx.get(f"{url}/healthz", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def test_two_nodes_over_the_api_survive_sigkill_of_an_agent_and_of_the_api(
        fresh_pg_url: str, tmp_path: Path) -> None:
    db = Database(fresh_pg_url)
    migrate.upgrade(db)
    w = make_world(db)
    w.clock = FakeClock(datetime.now(UTC))  # the processes use the real clock
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    logs = tmp_path / "logs"
    logs.mkdir()
    procs: dict[str, subprocess.Popen[bytes]] = {}

    def start(name: str, args: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
        out = (logs / f"{name}.log").open("ab")
        procs[name] = subprocess.Popen([*AICLOUD, *args], env=env, stdout=out,
                                       stderr=subprocess.STDOUT)
        return procs[name]

    def log_of(name: str) -> str:
        return (logs / f"{name}.log").read_text(errors="replace")

    api_env = _env(fresh_pg_url, tmp_path,
                   AICLOUD_PROVIDERS__LOCAL_ROOT=str(tmp_path / "api-wl"))
    agent_env = {n: _env("postgresql://nobody@127.0.0.1:1/unreachable", tmp_path,
                         AICLOUD_PROVIDERS__LOCAL_ROOT=str(tmp_path / n / "wl"))
                 for n in ("a", "b")}  # the agents get no usable database URL at all

    def agent(n: str, token: str | None) -> subprocess.Popen[bytes]:
        args = ["agent", "--url", url, "--state-dir", str(tmp_path / n / "state"),
                "--node-name", f"node-{n}"]
        return start(f"agent-{n}", [*args, "--token", token] if token else args,
                     agent_env[n])

    try:
        start("api", ["serve", "--port", str(port)], api_env)
        _until(lambda: _healthy(url), 60, "the API")
        with db.transaction() as s:
            token = gpuaas.create_join_token(
                s, expires_in=timedelta(minutes=10), max_uses=2, description="test",
                actor=audit.Actor.system("test"), now=datetime.now(UTC)).token
        agent("a", token)
        agent("b", token)

        def ready_nodes() -> dict[str, str]:
            with db.transaction() as s:
                return {n.name: n.id for n in s.scalars(select(NodeModel).where(
                    NodeModel.state == "ready"))}
        _until(lambda: len(ready_nodes()) == 2, 60, "both nodes to join")
        nodes = ready_nodes()
        for n in ("a", "b"):
            mode = (tmp_path / n / "state" / "node.json").stat().st_mode
            assert stat.S_IMODE(mode) == 0o600
        ids = [w.launch(f"i{i}", "gpu.h100.4x").id for i in range(4)]  # 8 GPUs per node

        def states() -> list[str]:
            return [w.get(i).state for i in ids]
        _until(lambda: states() == ["running"] * 4, 90, "4 instances running")
        on = {i: w.get(i).node_id for i in ids}
        assert set(on.values()) == set(nodes.values())  # both nodes run some
        started = {i: w.get(i).started_at for i in ids}
        time.sleep(3)

        # SIGKILL agent a, restart it without a token: its credential is in its state dir.
        procs["agent-a"].send_signal(signal.SIGKILL)
        procs["agent-a"].wait(10)
        time.sleep(2)
        agent("a", None)
        # SIGKILL the API (and its controllers); restart it.
        procs["api"].send_signal(signal.SIGKILL)
        procs["api"].wait(10)
        time.sleep(2)
        start("api", ["serve", "--port", str(port)], api_env)
        _until(lambda: _healthy(url), 60, "the API again")

        def beat_since(t: datetime) -> bool:
            with db.transaction() as s:
                return all(s.get(NodeModel, node_id).last_heartbeat_at > t
                           for node_id in nodes.values())
        back = datetime.now(UTC)
        _until(lambda: beat_since(back), 60, "both agents to heartbeat again")
        # Past the restarted agent's lease TTL: it has re-claimed node a's instances.
        time.sleep(TIMEOUT / 2)
        assert states() == ["running"] * 4, [w.get(i).state_reason for i in ids]
        assert {i: w.get(i).started_at for i in ids} == started
        with db.transaction() as s:
            starts = dict(s.execute(select(TransitionModel.instance_id, func.count()).where(
                TransitionModel.to_state == "running").group_by(
                TransitionModel.instance_id)).all())
        assert starts == {i: 1 for i in ids}  # never started twice

        for i in ids:
            w.stop(i, "test over")
        _until(lambda: states() == ["stopped"] * 4, 60, "the instances to stop")

        # Usage: every instance reported exactly its run time, whole seconds, once.
        with db.transaction() as s:
            expected = 0
            for i in ids:
                inst = s.get(InstanceModel, i)
                run = int((inst.ended_at - inst.started_at).total_seconds())
                gpu_seconds = s.scalar(select(func.sum(UsageRecordModel.quantity)).where(
                    UsageRecordModel.resource_id == i,
                    UsageRecordModel.meter == "gpu_seconds"))
                assert gpu_seconds == 4 * run, (i, gpu_seconds, run)
                expected += run * per_second_charge(4, 64, 512)
        # The server's own rater may hold the last records claimed while this one looks:
        # wait until every record is rated, whoever rates it.
        def all_rated() -> bool:
            billing.rate_until_idle(db, clock=w.clock)
            with db.transaction() as s:
                return not s.scalar(select(func.count()).select_from(UsageRecordModel).where(
                    UsageRecordModel.rated_at.is_(None)))
        _until(all_rated, 30, "every usage record to be rated")
        with db.transaction() as s:
            wallet = billing.org_wallet(s, w.org_id, "USD")
            charged = sum(t.amount for t in billing.list_transfers(s, wallet.id, limit=1000)
                          if t.reason == "usage")
        assert charged == expected

        # Revocation: node b's agent is refused and stops (exit 4), with the reason.
        with db.transaction() as s:
            gpuaas.revoke_node(s, nodes["node-b"], actor=audit.Actor.system("test"),
                               now=datetime.now(UTC), reason="decommissioned")
        assert procs["agent-b"].wait(30) == 4
        assert "revoked" in log_of("agent-b")
        assert procs["agent-a"].poll() is None
    finally:
        for p in procs.values():
            if p.poll() is None:
                p.terminate()
        for p in procs.values():
            try:
                p.wait(20)
            except subprocess.TimeoutExpired:
                p.kill()
        for n in ("a", "b"):
            from aicloud.adapters.providers.local.provider import LocalProvider
            provider = LocalProvider(tmp_path / n / "wl")
            for h in provider.list_workloads():
                try:
                    provider.stop(h, grace_seconds=0)
                except Exception:
                    pass
        db.dispose()
