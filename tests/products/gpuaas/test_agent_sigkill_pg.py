"""A real `aicloud agent` process on PostgreSQL, SIGKILLed while its instances run and bill:
the workloads keep running, the dead agent's leases expire (one node timeout), the restarted
agent claims the instances and re-attaches (nothing is provisioned or started again), and the
usage windows tile each run exactly: no second is metered twice or lost across the kill."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from itertools import pairwise
from pathlib import Path

import pytest
from sqlalchemy import select

from aicloud.platform.billing.models import UsageRecordModel
from aicloud.products import gpuaas
from aicloud.products.gpuaas.models import InstanceModel
from aicloud.shared.clock import SystemClock
from aicloud.shared.db import Database
from tests.conftest import empty_all
from tests.products.gpuaas.world import make_world, usage_windows

AICLOUD = [sys.executable, "-m", "aicloud.cli"]
NODE = "sigkill-node"


@pytest.fixture
def pg(_pg_session_db: Database) -> Iterator[Database]:
    empty_all(_pg_session_db)
    yield _pg_session_db


def _agent(url: str, root: Path) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AICLOUD_")}
    # Heartbeat every 1 s, leases of 3 s, 2 s usage windows.
    env.update(AICLOUD_DATABASE_URL=url, AICLOUD_PROVIDERS__LOCAL_ROOT=str(root),
               AICLOUD_PROVIDERS__INVENTORY__SOURCE="static",
               AICLOUD_NODE_HEARTBEAT_TIMEOUT_SECONDS="3",
               AICLOUD_USAGE_REPORT_INTERVAL_SECONDS="2",
               AICLOUD_CONTROLLER_INTERVAL_SECONDS="0.2", PYTHONUNBUFFERED="1")
    return subprocess.Popen([*AICLOUD, "agent", "--node-name", NODE], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def _until(what: str, check: Callable[[], bool], proc: subprocess.Popen[str],
           seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        if proc.poll() is not None:
            raise AssertionError(f"agent exited ({proc.returncode}) before {what}: "
                                 f"{proc.stderr.read() if proc.stderr else ''}")
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def _rows(db: Database, ids: list[str]) -> list[InstanceModel]:
    with db.transaction() as s:
        rows = list(s.scalars(select(InstanceModel).where(InstanceModel.id.in_(ids))
                              .order_by(InstanceModel.id)))
        s.expunge_all()
    return rows


def test_a_sigkilled_agent_restarts_and_reattaches_without_double_metering(
        pg: Database, tmp_path: Path) -> None:
    w = make_world(pg)
    w.clock = SystemClock()  # type: ignore[assignment]  # the agent process runs on real time
    root = tmp_path / "workloads"
    first = _agent(pg.url, root)
    second: subprocess.Popen[str] | None = None
    try:
        def registered() -> bool:
            with pg.transaction() as s:
                return any(n.name == NODE and n.state == "ready" for n in gpuaas.list_nodes(s))
        _until("the node registers", registered, first)
        ids = [w.launch(f"i{i}").id for i in range(2)]
        assert len(w.schedule()) == 2
        _until("both run and have billed a window", lambda: all(
            r.state == "running" and len(usage_windows(pg, r.id)) >= 1
            for r in _rows(pg, ids)), first)
        pids = {i: json.loads((root / i / "state.json").read_text())["pid"] for i in ids}

        first.send_signal(signal.SIGKILL)
        first.wait(10)
        killed_at = w.clock.now()
        second = _agent(pg.url, root)
        owner = f"{socket.gethostname()}:{second.pid}:gpuaas-agent"
        _until("the restarted agent holds both instances",
               lambda: all(r.lock_owner == owner for r in _rows(pg, ids)), second)
        taken_at = w.clock.now()
        _until("it bills again", lambda: all(
            r.last_metered_at is not None and r.last_metered_at > taken_at
            for r in _rows(pg, ids)), second)
        for i in ids:
            w.stop(i, "enough")
        _until("both stopped", lambda: all(r.state == "stopped" for r in _rows(pg, ids)),
               second)
    finally:
        for proc in (first, second):
            if proc is not None and proc.poll() is None:
                proc.terminate()
                proc.wait(20)

    # Re-attached, not restarted: the same workload processes ran to the stop.
    assert {i: json.loads((root / i / "state.json").read_text())["pid"] for i in ids} == pids
    for row in _rows(pg, ids):
        got = w.get(row.id)
        assert [t.to_state for t in got.transitions].count("provisioning") == 1
        assert [t.to_state for t in got.transitions].count("running") == 1
        assert row.started_at is not None and row.ended_at is not None
        windows = usage_windows(pg, row.id)
        assert windows[0][0] == row.started_at
        assert all(b[0] == a[1] for a, b in pairwise(windows)), windows  # no overlap, no gap
        assert windows[-1][1] == row.last_metered_at
        assert 0 <= (row.ended_at - windows[-1][1]).total_seconds() < 1
        assert any(start < killed_at for start, _ in windows)
        assert any(end > taken_at for _, end in windows)
        # Each window is one record per meter: no duplicate key was ever written.
        with pg.transaction() as s:
            keys = list(s.scalars(select(UsageRecordModel.idempotency_key).where(
                UsageRecordModel.resource_id == row.id,
                UsageRecordModel.meter == "gpu_seconds")))
            total = sum(s.scalars(select(UsageRecordModel.quantity).where(
                UsageRecordModel.resource_id == row.id,
                UsageRecordModel.meter == "gpu_seconds")))
        assert len(keys) == len(set(keys)) == len(windows)
        run = (windows[-1][1] - windows[0][0]).total_seconds()
        assert total == int(run) * row.gpu_count
