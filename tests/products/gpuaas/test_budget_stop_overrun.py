"""How much a ``stop_workloads`` budget is overrun, in seconds of spend, with the deployment's
own controllers (the real rater, budget evaluation and stop consumer at their configured
intervals) driven by a fake clock, and 30 s metering windows.

The spend that crosses the budget is only known when its window is metered, so up to one
window of overrun is inherent; everything after that (rating, evaluating, stopping) must add
next to nothing. Before budgets were evaluated when spend is posted, the 30 s budget poll
came on top of the metering delay and the overrun reached about two windows.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from aicloud.adapters.providers.local.provider import LocalProvider
from aicloud.platform import billing
from aicloud.products import gpuaas
from aicloud.runtime import gpuaas as gpuaas_runtime
from aicloud.shared.config import Settings
from aicloud.shared.controllers import Controller
from aicloud.shared.db import Database
from tests.products.gpuaas.world import ADMIN, h100s, make_world, per_second_charge

WINDOW = 30.0  # usage_report_interval_seconds
TICK = 0.5  # the agent's reconcile interval (min(controller interval, 0.5))
# The agent heartbeats (and reports usage) at its default interval, 10 s.


def _deployment_controllers(settings: Settings, db: Database, clock) -> list[Controller]:  # type: ignore[no-untyped-def]
    """The controllers a server runs that take part in a budget stop, as configured."""
    wanted = {"billing-rater", "billing-budgets", "gpuaas-budget-stop"}
    found = [*billing.controllers(db, interval_seconds=settings.controller_interval_seconds,
                                  clock=clock),
             *gpuaas_runtime.controllers(settings, db, clock)]
    return [c for c in found if c.name in wanted]


@pytest.mark.parametrize("start_offset", [5.0, 20.0])
def test_a_stop_budget_is_overrun_by_at_most_one_metering_window(
        db: Database, tmp_path: Path, start_offset: float) -> None:
    settings = Settings(controller_interval_seconds=2.0,
                        usage_report_interval_seconds=WINDOW)
    w = make_world(db)
    controllers = _deployment_controllers(settings, db, w.clock)
    assert {c.name for c in controllers} == {"billing-rater", "billing-budgets",
                                               "gpuaas-budget-stop"}
    report = gpuaas.NodeReport(name="n1", inventory_source="static", simulated=True,
                               gpus=h100s(8))
    agent = gpuaas.NodeAgent(
        store=gpuaas.DbNodeStore(db, clock=w.clock),
        provider=LocalProvider(tmp_path / "wl"), report=lambda: report, clock=w.clock,
        stop_grace_seconds=1, meter_interval=timedelta(seconds=WINDOW))
    agent.heartbeat()

    elapsed = 0.0
    next_run = {c.name: 0.0 for c in controllers}
    beat = agent.heartbeat_interval.total_seconds()  # usage is reported on heartbeats
    next_beat = beat

    def advance_to(t: float) -> None:
        """Run every controller whose interval came round, in fake time, until t."""
        nonlocal elapsed, next_beat
        while elapsed < t:
            w.clock.advance(TICK)
            elapsed += TICK
            if elapsed >= next_beat:
                agent.heartbeat()
                next_beat = elapsed + beat
            agent.reconcile_once()
            for c in controllers:
                if elapsed >= next_run[c.name]:
                    c.run_once()
                    next_run[c.name] = elapsed + c.interval_seconds

    advance_to(start_offset)  # the controllers' phase is not the instance's
    inst = w.launch("train")
    w.schedule()
    agent.reconcile_once()
    running = w.get(inst.id)
    assert running.state == "running"
    rate = per_second_charge(running.gpu_count, running.vcpus, running.memory_gib)
    budget_seconds = 45
    with db.transaction() as s:
        billing.create_budget(s, actor=ADMIN, spec=billing.BudgetCreate(
            scope_path=w.scope_path, amount=budget_seconds * rate, currency="USD",
            thresholds=[50, 80], action="stop_workloads"))  # 100% applies anyway

    started = elapsed
    while w.get(inst.id).state != "stopped":
        assert elapsed - started < 10 * WINDOW, "the budget never stopped the instance"
        advance_to(elapsed + TICK)
    billing.rate_until_idle(db, clock=w.clock)  # the final partial window
    with db.transaction() as s:
        _, month_start, month_end = billing.month_bounds(w.clock.now())
        spend = billing.scope_spend(s, w.scope_path, "USD", month_start, month_end)
    overrun_seconds = (spend - budget_seconds * rate) / rate
    assert 0 < overrun_seconds <= WINDOW, overrun_seconds
    stopped = w.get(inst.id)
    assert "exhausted" in (stopped.stop_reason or "")
