"""Two `aicloud worker` processes (schedulers) and two `aicloud agent` processes for the same
node, all on one PostgreSQL: every instance is placed once and started once, no GPU is handed
out twice, and a restarted agent re-attaches instead of starting anything again."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import func, select

from aicloud.adapters.providers.base import WorkloadHandle, WorkloadNotFound
from aicloud.adapters.providers.local.provider import LocalProvider
from aicloud.products.gpuaas.models import GpuAssignmentModel, TransitionModel
from aicloud.shared.clock import FakeClock
from aicloud.shared.db import Database
from tests.products.gpuaas.world import make_world

AICLOUD = [sys.executable, "-m", "aicloud.cli"]


def _env(url: str, root: Path) -> dict[str, str]:
    e = {k: v for k, v in os.environ.items() if not k.startswith("AICLOUD_")}
    # The test's own anchor sink: the dev profile's default (var/anchors) is the checkout's.
    e.update(AICLOUD_DATABASE_URL=url, AICLOUD_PROVIDERS__LOCAL_ROOT=str(root),
             AICLOUD_AUDIT_ANCHOR_SINK=f"dir:{root.parent / 'anchors'}",
             AICLOUD_PROVIDERS__INVENTORY__SOURCE="static",
             AICLOUD_CONTROLLER_INTERVAL_SECONDS="0.05", PYTHONUNBUFFERED="1")
    return e


def test_two_workers_two_agents_never_double_place_or_start(migrated_pg_url: str,
                                                            tmp_path: Path) -> None:
    db = Database(migrated_pg_url)
    w = make_world(db)
    # The processes below use the real clock: a node registered at the world's fake time
    # would look silent for months, and a worker's monitor could take it down (requeueing
    # what its scheduler just placed) before an agent's first heartbeat.
    w.clock = FakeClock(datetime.now(UTC))
    w.add_node("shared-node", gpus=8)  # both agents below register as this node
    ids = [w.launch(f"i{i}").id for i in range(12)]  # 8 fit, 4 wait
    root = tmp_path / "workloads"
    env = _env(migrated_pg_url, root)
    procs = [subprocess.Popen([*AICLOUD, *args], env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True)
             for args in (["worker"], ["worker"],
                          ["agent", "--node-name", "shared-node"],
                          ["agent", "--node-name", "shared-node"])]
    try:
        deadline = time.monotonic() + 60
        while True:
            states = [w.get(i).state for i in ids]
            if states.count("running") == 8:
                break
            assert time.monotonic() < deadline, states
            assert all(p.poll() is None for p in procs), [p.stderr.read() for p in procs
                                                          if p.poll() is not None]
            time.sleep(0.2)
        time.sleep(1.0)  # let any duplicate work show itself
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(20)
    with db.transaction() as s:
        for to_state in ("scheduled", "provisioning", "running"):
            counts = dict(s.execute(
                select(TransitionModel.instance_id, func.count())
                .where(TransitionModel.to_state == to_state)
                .group_by(TransitionModel.instance_id)).all())
            assert set(counts.values()) == {1}, (to_state, counts)
            assert len(counts) == 8
        assert s.scalar(select(func.count()).select_from(GpuAssignmentModel)) == 8
    assert sorted(w.get(i).state for i in ids).count("admitted") == 4
    provider = LocalProvider(root)
    assert len(provider.list_workloads()) == 8  # each created once, in its own directory
    # A restarted agent re-attaches: nothing new is started, everything still runs.
    agent = subprocess.Popen([*AICLOUD, "agent", "--node-name", "shared-node"], env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(2.0)
        assert [w.get(i).state for i in ids].count("running") == 8
    finally:
        agent.terminate()
        agent.wait(20)
    for i in ids:
        try:
            provider.stop(WorkloadHandle("local", i), grace_seconds=1)
        except WorkloadNotFound:  # not started: the 4 that waited
            pass
    db.dispose()
