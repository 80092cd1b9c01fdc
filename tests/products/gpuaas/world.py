"""A small GPU cloud for GPUaaS service tests: one org/department/project, prices, a funded
wallet and registered nodes."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from sqlalchemy import select, text
from sqlalchemy.orm import Session

from aicloud.platform import audit, billing, iam
from aicloud.platform.billing.models import UsageRecordModel
from aicloud.products import gpuaas
from aicloud.runtime import gpuaas as gpuaas_runtime
from aicloud.shared.clock import FakeClock
from aicloud.shared.db import Database
from aicloud.shared.errors import AppError

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
ADMIN = audit.Actor(id="user_admin")
# The seeded per-second prices (micro-USD).
PRICE = {("gpu_seconds", "H100"): 700, ("vcpu_seconds", ""): 10,
         ("memory_gib_seconds", ""): 1}


def per_second_charge(gpus: int, vcpus: int, mem: int) -> int:
    return (gpus * PRICE[("gpu_seconds", "H100")] + vcpus * PRICE[("vcpu_seconds", "")]
            + mem * PRICE[("memory_gib_seconds", "")])


def h100s(n: int) -> tuple[gpuaas.GpuReport, ...]:
    return tuple(gpuaas.GpuReport(index=i, model="H100", name="NVIDIA H100 (simulated)",
                                  memory_gib=80, uuid=f"GPU-sim-{i}") for i in range(n))


@dataclass
class World:
    db: Database
    clock: FakeClock
    org_id: str
    project_id: str
    scope_path: str
    user_id: str = "user_alice"
    nodes: dict[str, str] = field(default_factory=dict)

    @property
    def who(self) -> gpuaas.Requester:
        return gpuaas.Requester(principal_id=self.user_id, org_id=self.org_id,
                                project_id=self.project_id, scope_path=self.scope_path)

    def add_node(self, name: str, gpus: int = 8) -> str:
        report = gpuaas.NodeReport(name=name, inventory_source="static", simulated=True,
                                   gpus=h100s(gpus), labels={"simulated": "true"})
        with self.db.transaction() as s:
            node = gpuaas.register_node(s, report, actor=ADMIN, now=self.clock.now())
            self.nodes[name] = node.id
        return self.nodes[name]

    def launch(self, name: str = "box", instance_type: str = "gpu.h100.1x", *,
               template: str = "shell", key: str | None = None, priority: int = 0,
               command: list[str] | None = None) -> gpuaas.Instance:
        with self.db.transaction() as s:
            return gpuaas.launch(s, gpuaas.InstanceLaunch(
                name=name, instance_type=instance_type, template=template,  # type: ignore[arg-type]
                priority=priority, command=command), who=self.who, actor=ADMIN,
                idempotency_key=key, now=self.clock.now())

    def schedule(self) -> list[gpuaas.Placement]:
        with self.db.transaction() as s:
            return gpuaas.schedule_pass(s, now=self.clock.now())

    def get(self, instance_id: str) -> gpuaas.Instance:
        with self.db.transaction() as s:
            return gpuaas.get_instance(s, instance_id)

    def stop(self, instance_id: str, reason: str = "stopped by user") -> None:
        with self.db.transaction() as s:
            gpuaas.request_stop(s, instance_id, reason=reason, actor=ADMIN,
                                now=self.clock.now())

    def top_up(self, amount: int) -> None:
        with self.db.transaction() as s:
            billing.top_up(s, actor=ADMIN, org_id=self.org_id, amount=amount, currency="USD",
                           idempotency_key=f"t{amount}-{self.clock.now().timestamp()}")

    def wallet_balance(self) -> billing.Balance:
        with self.db.transaction() as s:
            return billing.balance(s, billing.org_wallet(s, self.org_id, "USD").id,
                                   now=self.clock.now())


def make_world(db: Database, *, funds: int = 100_000_000, seed_prices: bool = True) -> World:
    clock = FakeClock(T0)
    with db.transaction() as s:
        org = iam.create_org(s, "acme", actor=ADMIN)
        dep = iam.create_department(s, org.id, "research", actor=ADMIN)
        prj = iam.create_project(s, name="llm", department_id=dep.id, actor=ADMIN)
        path = iam.scope_path(s, prj.id)
    settings_seed = seed_prices
    gpuaas_runtime.prepare_meters_and_prices(db, seed_prices=settings_seed)
    world = World(db=db, clock=clock, org_id=org.id, project_id=prj.id, scope_path=path)
    if funds:
        world.top_up(funds)
    return world


def _in_thread(fn: Callable[[], object]) -> tuple[threading.Thread, list[object]]:
    out: list[object] = []

    def run() -> None:
        try:
            out.append(fn())
        except AppError as e:
            out.append(e)
    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t, out


_LOCK_WAITS = text("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                   "AND pid <> pg_backend_pid() AND wait_event_type = 'Lock'")


def _waits_on_a_lock(db: Database) -> bool:
    """PostgreSQL shows a transaction blocked on a lock; SQLite's busy wait shows nowhere."""
    if db.dialect != "postgresql":
        return False
    with db.engine.connect() as conn:
        return bool(conn.scalar(_LOCK_WAITS))


def second_waits_for_first(db: Database, first: Callable[[Session], object],
                           second: Callable[[], object]) -> object:
    """Run ``first`` in an open transaction, start ``second`` in another thread (its own
    transaction), check it waits (0.5 s later it is still running, or PostgreSQL shows it
    blocked on a lock, which only the first's commit releases), commit the first, return
    what the second did."""
    s1 = db.session()
    with s1.begin():
        first(s1)
        t, out = _in_thread(second)
        deadline = time.monotonic() + 0.5
        while time.monotonic() < deadline and t.is_alive() and not _waits_on_a_lock(db):
            time.sleep(0.02)
        assert t.is_alive(), f"the second transaction did not wait: {out}"
    s1.close()
    t.join(15)
    assert not t.is_alive()
    return out[0]


def usage_windows(db: Database, instance_id: str,
                  meter: str = "gpu_seconds") -> list[tuple[datetime, datetime]]:
    """The usage windows reported for an instance on one meter, in order."""
    with db.transaction() as s:
        return sorted(s.execute(select(UsageRecordModel.window_start, UsageRecordModel.window_end)
                                .where(UsageRecordModel.resource_id == instance_id,
                                       UsageRecordModel.meter == meter)).all())
