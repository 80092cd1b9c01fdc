"""The node agent with the real local provider: provision, run, meter, stop, re-attach; and
the exact charge (run time x price, to the second) with a fake clock."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from aicloud.adapters.providers.local.provider import LocalProvider
from aicloud.platform import billing
from aicloud.products import gpuaas
from aicloud.shared.db import Database
from tests.products.gpuaas.world import World, h100s, make_world, per_second_charge


def _agent(w: World, root: Path) -> gpuaas.NodeAgent:
    report = gpuaas.NodeReport(name="n1", inventory_source="static", simulated=True,
                               gpus=h100s(8))
    return gpuaas.NodeAgent(
        store=gpuaas.DbNodeStore(w.db, clock=w.clock),
        provider=LocalProvider(root), report=lambda: report, clock=w.clock, stop_grace_seconds=2)


def _charged(w: World) -> int:
    """Usage charged to the world's wallet (each test runs one instance at a time)."""
    billing.rate_until_idle(w.db, clock=w.clock)
    with w.db.transaction() as s:
        wallet = billing.org_wallet(s, w.org_id, "USD")
        transfers = billing.list_transfers(s, wallet.id, limit=1000)
    return sum(t.amount for t in transfers if t.reason == "usage")


def test_launch_run_meter_stop_charges_run_time_times_price(db: Database,
                                                            tmp_path: Path) -> None:
    w = make_world(db)
    agent = _agent(w, tmp_path / "workloads")
    agent.heartbeat()
    inst = w.launch("a", "gpu.h100.1x")
    w.schedule()
    agent.reconcile_once()
    got = w.get(inst.id)
    assert got.state == "running", got.state_reason
    assert [t.to_state for t in got.transitions] == [
        "requested", "admitted", "scheduled", "provisioning", "running"]
    w.clock.advance(45.7)
    agent.reconcile_once()  # 45 whole seconds reported, 0.7 s carried over
    w.clock.advance(20)
    agent.reconcile_once()  # 20.7 s since: below the 30 s interval, nothing reported
    w.stop(inst.id, "done for today")
    w.clock.advance(10.5)
    agent.reconcile_once()  # stopping -> final window -> stopped
    got = w.get(inst.id)
    assert got.state == "stopped" and got.state_reason == "done for today"
    run_seconds = int(45.7 + 20 + 10.5)  # 76
    assert _charged(w) == run_seconds * per_second_charge(1, 16, 128)
    # The hold for the minimum period was released, not charged.
    assert w.wallet_balance().held == 0
    # Metering again is a no-op: nothing is double-counted.
    assert agent.reconcile_once() == 0


def test_web_app_serves_and_a_restarted_agent_reattaches(db: Database, tmp_path: Path) -> None:
    w = make_world(db)
    root = tmp_path / "workloads"
    agent = _agent(w, root)
    agent.heartbeat()
    inst = w.launch("web", "gpu.h100.2x", template="web-app")
    w.schedule()
    agent.reconcile_once()
    got = w.get(inst.id)
    assert got.state == "running" and got.endpoint_url
    body = _fetch(got.endpoint_url)
    assert inst.id in body or "CUDA_VISIBLE_DEVICES" in body or body
    # A new agent (new provider object: a restarted control plane) sees the same workload.
    agent2 = _agent(w, root)
    agent2.heartbeat()
    w.clock.advance(31)
    agent2.reconcile_once()
    assert w.get(inst.id).state == "running"
    w.stop(inst.id)
    agent2.reconcile_once()
    assert w.get(inst.id).state == "stopped"
    assert _charged(w) == 31 * per_second_charge(2, 32, 256)


def test_a_workload_that_exits_by_itself_is_stopped_or_failed(db: Database,
                                                              tmp_path: Path) -> None:
    w = make_world(db)
    agent = _agent(w, tmp_path / "wl")
    agent.heartbeat()
    ok = w.launch("ok", template="batch", command=["sh", "-c", "sleep 0.3"])
    bad = w.launch("bad", template="batch", command=["sh", "-c", "sleep 0.3; exit 3"])
    w.schedule()
    agent.reconcile_once()
    import time

    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        w.clock.advance(1)
        agent.reconcile_once()
        if w.get(ok.id).state != "running" and w.get(bad.id).state != "running":
            break
        time.sleep(0.1)
    assert w.get(ok.id).state == "succeeded" and w.get(ok.id).exit_code == 0
    failed = w.get(bad.id)
    assert failed.state == "failed" and failed.exit_code == 3
    assert "exited with code 3" in failed.state_reason


def _fetch(url: str) -> str:
    import time

    deadline = time.monotonic() + 10
    while True:
        try:
            return httpx.get(url, timeout=2).text
        except httpx.TransportError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


@pytest.fixture(autouse=True)
def _no_leftover_workloads(tmp_path: Path):  # type: ignore[no-untyped-def]
    yield
    for sub in tmp_path.iterdir():
        if sub.is_dir():
            provider = LocalProvider(sub)
            for handle in provider.list_workloads():
                try:
                    provider.stop(handle, grace_seconds=1)
                except Exception:
                    pass


def test_batch_results_with_the_dev_profiles_relative_workload_root(
        db: Database, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The dev profile's `var/workloads` is relative: `true` succeeds, `exit 3` fails with
    code 3, and each log starts with the workload's own output (once, a supervisor crash on
    the relative path lost every exit code and put its traceback first in every log)."""
    import time

    from aicloud.runtime import gpuaas as gpuaas_runtime
    from aicloud.shared.config import load_settings

    monkeypatch.chdir(tmp_path)  # a checkout: var/ is created below the working directory
    settings = load_settings("dev", database_url=db.url, controllers_enabled=False)
    assert settings.providers.local_root == str(tmp_path / "var" / "workloads")
    w = make_world(db)
    agent = gpuaas_runtime.build_agent(settings, db, w.clock, node_name="n1")
    agent.heartbeat()
    ok = w.launch("ok", template="batch", command=["sh", "-c", "echo first line; true"])
    bad = w.launch("bad", template="batch", command=["sh", "-c", "echo first line; exit 3"])
    w.schedule()
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        w.clock.advance(1)
        agent.reconcile_once()
        if {w.get(ok.id).state, w.get(bad.id).state} <= set(gpuaas.TERMINAL_STATES):
            break
        time.sleep(0.1)
    done, failed = w.get(ok.id), w.get(bad.id)
    assert (done.state, done.exit_code) == ("succeeded", 0), done.state_reason
    assert (failed.state, failed.exit_code) == ("failed", 3), failed.state_reason
    for inst in (done, failed):
        with db.transaction() as s:
            m = gpuaas.get_instance_model(s, inst.id)
            provider_name, ref = m.provider, m.provider_ref
        out = gpuaas_runtime.instance_logs(settings, provider_name, ref, offset=0,
                                           tail_lines=None, ended=True)
        assert out.data.startswith("first line\n"), out.data
