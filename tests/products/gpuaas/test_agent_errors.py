"""How the node agent treats provider errors, kopf-style: a temporary one is retried for that
instance only, after delays that double with jitter (no write, no provider call in between);
provisioning that keeps failing is given up after its timeout; a permanent one fails the
instance once, with the reason, and it is never tried again.

The provider is the real local one; :class:`Flaky` only counts its create calls and, for the
first ``busy`` ones, answers "busy" the way a Slurm queue or a Kubernetes API under load
would (the local provider has no such state to put it in)."""

from __future__ import annotations

import random
from datetime import datetime, timedelta
from itertools import pairwise
from pathlib import Path

from aicloud.adapters.providers.base import (
    ProviderError,
    TemporaryProviderError,
    WorkloadHandle,
    WorkloadKind,
    WorkloadSpec,
    WorkloadStatus,
)
from aicloud.adapters.providers.local.provider import LocalProvider
from aicloud.products import gpuaas
from aicloud.shared.clock import FakeClock
from aicloud.shared.db import Database
from aicloud.shared.db.write_counter import WriteCounter
from tests.products.gpuaas.world import World, h100s, make_world

STEP = 0.1  # fake seconds between passes: fine enough to see each delay


class Flaky(LocalProvider):
    def __init__(self, root: Path, clock: FakeClock, busy: int):
        super().__init__(root)
        self.clock, self.busy = clock, busy
        self.creates: list[datetime] = []

    def create(self, spec: WorkloadSpec) -> WorkloadHandle:
        self.creates.append(self.clock.now())
        if len(self.creates) <= self.busy:
            raise TemporaryProviderError("provider busy: try again later")
        return super().create(spec)


class StuckStop(LocalProvider):
    """The real local provider whose first ``failures`` stops fail permanently (what the local
    one says when a workload survives SIGKILL, a D-state process that cannot be made here)."""

    def __init__(self, root: Path, clock: FakeClock, failures: int):
        super().__init__(root)
        self.clock, self.failures = clock, failures
        self.stops: list[datetime] = []

    def stop(self, handle: WorkloadHandle, *, grace_seconds: float) -> WorkloadStatus:
        self.stops.append(self.clock.now())
        if len(self.stops) <= self.failures:
            raise ProviderError(f"workload {handle.ref}: survived SIGKILL")
        return super().stop(handle, grace_seconds=grace_seconds)


def _agent(w: World, provider: LocalProvider, **kw: object) -> gpuaas.NodeAgent:
    report = gpuaas.NodeReport(name="n1", inventory_source="static", simulated=True,
                               gpus=h100s(8))
    return gpuaas.NodeAgent(
        store=gpuaas.DbNodeStore(w.db, clock=w.clock),
        provider=provider, report=lambda: report, clock=w.clock, stop_grace_seconds=1,
        jitter=random.Random(11), **kw)  # type: ignore[arg-type]


def _passes(w: World, agent: gpuaas.NodeAgent, instance_id: str, seconds: float) -> str:
    """Reconcile every STEP until the instance leaves scheduled/provisioning."""
    for _ in range(int(seconds / STEP)):
        agent.reconcile_once()
        state = w.get(instance_id).state
        if state not in ("scheduled", "provisioning"):
            return state
        w.clock.advance(STEP)
    return w.get(instance_id).state


def test_a_temporary_error_is_retried_after_growing_jittered_delays(
        sqlite_db: Database, tmp_path: Path) -> None:
    w = make_world(sqlite_db)
    provider = Flaky(tmp_path / "wl", w.clock, busy=5)
    agent = _agent(w, provider)
    agent.heartbeat()
    inst = w.launch("a")
    w.schedule()
    with WriteCounter(sqlite_db.engine) as counter:
        assert _passes(w, agent, inst.id, 60) == "running"
    # Claimed, provisioning, running: the five failures wrote nothing.
    assert counter.writes == 3, counter.writes
    delays = [(b - a).total_seconds() for a, b in pairwise(provider.creates)]
    assert len(delays) == 5
    ceilings = [agent.retry_backoff.ceiling(n) for n in range(1, 6)]
    assert ceilings == [1, 2, 4, 8, 16]
    for delay, ceiling in zip(delays, ceilings, strict=True):
        assert ceiling / 2 <= delay <= ceiling + STEP + 1e-6, (delays, ceilings)
    assert delays == sorted(delays) and delays[-1] > 4 * delays[0]  # they grow
    # Jittered: not the plain doublings, each a different fraction of its ceiling.
    assert len({round(d / c, 2) for d, c in zip(delays, ceilings, strict=True)}) >= 4
    assert agent.retry_of(inst.id) is None  # success resets it
    w.stop(inst.id)
    agent.reconcile_once()


def test_provisioning_that_keeps_failing_is_given_up_once(sqlite_db: Database,
                                                         tmp_path: Path) -> None:
    w = make_world(sqlite_db)
    provider = Flaky(tmp_path / "wl", w.clock, busy=10**6)
    agent = _agent(w, provider, provision_timeout=timedelta(seconds=30))
    agent.heartbeat()
    inst = w.launch("a")
    w.schedule()
    assert _passes(w, agent, inst.id, 90) == "failed"
    got = w.get(inst.id)
    assert "kept failing for" in got.state_reason and "provider busy" in got.state_reason
    # About log2(30) attempts over 30 s, not one per pass (300 passes).
    assert 5 <= len(provider.creates) <= 8, provider.creates
    tried = len(provider.creates)
    with WriteCounter(sqlite_db.engine) as counter:
        for _ in range(20):
            w.clock.advance(5)
            agent.reconcile_once()
    assert counter.writes == 0 and len(provider.creates) == tried
    assert [t.to_state for t in got.transitions].count("failed") == 1
    assert agent.held() == []


def test_a_permanent_error_fails_the_instance_once_with_the_reason(db: Database,
                                                                  tmp_path: Path) -> None:
    w = make_world(db)
    root = tmp_path / "wl"
    provider = Flaky(root, w.clock, busy=0)
    agent = _agent(w, provider)
    agent.heartbeat()
    inst = w.launch("a")
    w.schedule()
    # The provider already has a workload with this id and another spec (a real conflict:
    # a stale directory on the node). It can never be created as asked.
    LocalProvider(root).create(WorkloadSpec(workload_id=inst.id, kind=WorkloadKind.BATCH,
                                            command=("true",)))
    assert _passes(w, agent, inst.id, 5) == "failed"
    got = w.get(inst.id)
    assert got.state_reason.startswith("provider local refused: ")
    assert "different spec" in got.state_reason
    assert [t.to_state for t in got.transitions].count("failed") == 1
    with WriteCounter(db.engine) as counter:
        for _ in range(20):
            w.clock.advance(1)
            agent.reconcile_once()
    assert len(provider.creates) == 1 and counter.writes == 0
    assert w.wallet_balance().held == 0  # its admission hold was released, not charged


def test_a_stop_that_fails_is_retried_with_backoff_and_never_given_up(
        sqlite_db: Database, tmp_path: Path) -> None:
    """Even a permanent error: failing the instance would give its GPUs to someone else
    while its workload may still run on them."""
    w = make_world(sqlite_db)
    provider = StuckStop(tmp_path / "wl", w.clock, failures=4)
    agent = _agent(w, provider)
    agent.heartbeat()
    inst = w.launch("a")
    w.schedule()
    agent.reconcile_once()
    w.stop(inst.id, "done")
    seen = set()
    for _ in range(400):
        agent.reconcile_once()
        got = w.get(inst.id)
        seen.add(got.state)
        if got.state == "stopping":
            with sqlite_db.transaction() as s:
                gpus = [g for n in gpuaas.list_nodes(s) for g in n.gpus]
            assert [g.instance_id for g in gpus].count(inst.id) == 1  # still held
        if got.state not in ("running", "stopping"):
            break
        w.clock.advance(STEP)
    assert got.state == "stopped" and got.state_reason == "done", seen
    assert "failed" not in seen and len(provider.stops) == 5
    delays = [(b - a).total_seconds() for a, b in pairwise(provider.stops)]
    assert delays == sorted(delays) and delays[0] >= 0.5 and delays[-1] >= 4
