"""Database writes of an idle node agent: one node, 8 running instances (idle ``shell``
workloads of the real local provider), the agent's own two controllers (heartbeat + reconcile
loop, run by ControllerRunner as ``aicloud agent`` runs them) on real time for MEASURE
seconds, on SQLite and PostgreSQL. The database itself tells which committed transactions
wrote (WriteCounter: PostgreSQL's transaction id, SQLite's change count).

Baseline in the same run, measured the same way on the same 8 instances: the agent loop
before issue 11 (:class:`PerPassLeases`): every pass (0.5 s) claims every instance of the
node, re-reads each one and releases each lease in its own transaction; usage is reported by
the pass. Target: at most 1 write transaction per heartbeat interval (the heartbeat's own:
node, leases and usage windows in one).

Heartbeat every 2 s (node timeout 6 s), 4 s usage windows, so windows fall due while
measuring.
"""

from __future__ import annotations

import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy.orm import Session, object_session

from aicloud.adapters.providers.base import WorkloadHandle, WorkloadNotFound
from aicloud.adapters.providers.local.provider import LocalProvider
from aicloud.platform import audit, billing, iam
from aicloud.products import gpuaas
from aicloud.products.gpuaas.lifecycle import ON_NODE_STATES
from aicloud.products.gpuaas.models import InstanceModel
from aicloud.runtime import gpuaas as gpuaas_runtime
from aicloud.shared import leases
from aicloud.shared.clock import SystemClock
from aicloud.shared.config import Settings
from aicloud.shared.controllers import ControllerRunner
from aicloud.shared.db import Database
from aicloud.shared.db.write_counter import WriteCounter
from bench.dbs import each_database
from bench.harness import Measurement

MEASURE = 10.0
BEAT = 2.0
WINDOW = 4.0
N = 8
ADMIN = audit.Actor(id="user_bench")
_WORK = ["scheduled", *(s.value for s in ON_NODE_STATES)]


class PerPassLeases(gpuaas.NodeAgent):
    """The previous agent loop, kept runnable for this comparison only."""

    def heartbeat(self) -> str:
        report = self.report()
        with self.db.transaction() as session:
            self.node_id = gpuaas.register_node(session, report, actor=self.actor,
                                                now=self.clock.now()).id
        self.kill_leftovers()
        return self.node_id

    def reconcile_once(self) -> int:
        with self.db.transaction() as session:
            claimed = leases.claim(
                session, InstanceModel, owner=self.owner, limit=100, ttl=self.lease_ttl,
                where=[InstanceModel.node_id == self.node_id, InstanceModel.state.in_(_WORK)],
                order_by=[InstanceModel.queue_order], clock=self.clock)
        for lease in claimed:
            try:
                with self.db.transaction() as session:
                    inst = leases.get_leased(session, InstanceModel, lease)
                    if inst is not None:
                        session.expunge(inst)
                if inst is not None:
                    self._observe_then(lease, inst)
            finally:
                with self.db.transaction() as session:
                    leases.release(session, InstanceModel, lease)
        return len(claimed)

    def _observe_then(self, lease: leases.Lease, inst: InstanceModel) -> None:
        now = self.clock.now()
        self.provider.status(self._handle_of(inst))
        if inst.last_metered_at is not None and now - inst.last_metered_at >= self.meter_interval:
            self._write(lease, lambda row: gpuaas.meter_instance(
                _session_of(row), row, until=now, actor=self.actor))


def _session_of(row: InstanceModel) -> Session:
    session = object_session(row)
    assert session is not None
    return session


def _world(db: Database) -> gpuaas.Requester:
    with db.transaction() as s:
        org = iam.create_org(s, "bench", actor=ADMIN)
        dep = iam.create_department(s, org.id, "d", actor=ADMIN)
        prj = iam.create_project(s, name="p", department_id=dep.id, actor=ADMIN)
        path = iam.scope_path(s, prj.id)
    gpuaas_runtime.prepare_meters_and_prices(db, seed_prices=True)
    with db.transaction() as s:
        billing.top_up(s, actor=ADMIN, org_id=org.id, amount=10**12, currency="USD",
                       idempotency_key="bench-funds")
    return gpuaas.Requester(principal_id="user_bench", org_id=org.id, project_id=prj.id,
                            scope_path=path)


def _agent(cls: type[gpuaas.NodeAgent], db: Database, root: Path) -> gpuaas.NodeAgent:
    report = gpuaas.NodeReport(
        name="bench-node", inventory_source="static", simulated=True,
        gpus=tuple(gpuaas.GpuReport(index=i, model="H100", name="H100 (simulated)",
                                    memory_gib=80) for i in range(N)))
    return cls(db=db, provider=LocalProvider(root), report=lambda: report, clock=SystemClock(),
               stop_grace_seconds=1, heartbeat_interval=timedelta(seconds=BEAT),
               meter_interval=timedelta(seconds=WINDOW), lease_ttl=timedelta(seconds=3 * BEAT))


def _idle_writes(db: Database, agent: gpuaas.NodeAgent) -> tuple[float, float]:
    """Write transactions per second and per heartbeat interval while the agent idles."""
    runner = ControllerRunner(gpuaas_runtime.agent_controllers(
        Settings(controller_interval_seconds=2.0), agent))
    runner.start()
    time.sleep(BEAT)  # settle: claims, first heartbeat
    with WriteCounter(db.engine) as counter:
        t0 = time.monotonic()
        time.sleep(MEASURE)
        elapsed = time.monotonic() - t0
    runner.stop()
    return counter.writes / elapsed, counter.writes / (elapsed / BEAT)


def _one(name: str, db: Database, root: Path) -> list[Measurement]:
    who = _world(db)
    agent = _agent(gpuaas.NodeAgent, db, root)
    agent.heartbeat()
    now = datetime.now(UTC)
    with db.transaction() as s:
        ids = [gpuaas.launch(s, gpuaas.InstanceLaunch(name=f"i{i}", instance_type="gpu.h100.1x",
                                                      template="shell"),
                             who=who, actor=ADMIN, idempotency_key=None, now=now).id
               for i in range(N)]
    with db.transaction() as s:
        gpuaas.schedule_pass(s, now=datetime.now(UTC))
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        agent.reconcile_once()
        with db.transaction() as s:
            if all(gpuaas.get_instance(s, i).state == "running" for i in ids):
                break
    try:
        ours = _idle_writes(db, agent)  # hands its leases back when stopped
        before = _idle_writes(db, _agent(PerPassLeases, db, root))
    finally:
        provider = LocalProvider(root)
        for i in ids:
            try:
                provider.stop(WorkloadHandle("local", i), grace_seconds=1)
            except WorkloadNotFound:
                pass
    return [
        Measurement(f"idle agent, {N} instances: write tx/s ({name})", ours[0], "tx/s",
                    baseline_name="claim + release every pass (before)",
                    baseline_value=before[0], higher_is_better=False,
                    target=f"<= {1 / BEAT:.1f}/s (1 per {BEAT:.0f} s heartbeat)"),
        Measurement(f"idle agent, {N} instances: write tx per heartbeat ({name})", ours[1],
                    "tx", baseline_name="claim + release every pass (before)",
                    baseline_value=before[1], higher_is_better=False, target="<= 1"),
    ]


def run() -> list[Measurement]:
    out: list[Measurement] = []
    with tempfile.TemporaryDirectory() as d, each_database() as dbs:
        Path(d).chmod(0o711)  # the sandbox mounts workload dirs as their own uid
        for name, db in dbs:
            out += _one(name, db, Path(d) / name)
    return out
