"""GPUaaS composition: the local provider, the node agent and the product's controllers."""

from __future__ import annotations

import base64
import socket
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy.orm import Session

from aicloud.adapters.inventory.base import InventoryUnavailable
from aicloud.adapters.providers.base import (
    ComputeProvider,
    ProviderError,
    WorkloadHandle,
    WorkloadNotFound,
)
from aicloud.adapters.providers.local.provider import LocalProvider
from aicloud.platform import audit, billing
from aicloud.products import gpuaas
from aicloud.runtime.adapters import gpu_inventory
from aicloud.runtime.metrics import metrics_collector
from aicloud.runtime.products import declare_product_meters
from aicloud.shared.clock import Clock
from aicloud.shared.config import ConfigError, Settings
from aicloud.shared.controllers import Controller
from aicloud.shared.db import Database

if TYPE_CHECKING:
    from aicloud.runtime.node_links import NodeLinkHub

# Per-second prices (micro-USD) so charges are exact to the second in a demo.
DEFAULT_PRICES = (("gpu_seconds", "H100", 700), ("gpu_seconds", "A100", 400),
                  ("vcpu_seconds", "", 10), ("memory_gib_seconds", "", 1))
SEED_ACTOR = audit.Actor.system("seed")


def compute_provider(settings: Settings, *, runs_workloads: bool = True) -> ComputeProvider:
    """The provider of this host. ``runs_workloads=False`` for a process that only reads
    (the API's log reader): it neither needs nor checks the workload sandbox."""
    if settings.providers.compute != "local":
        raise ValueError(f"compute provider {settings.providers.compute!r} is not available "
                         "in this build (only 'local')")
    local = settings.providers
    try:
        return LocalProvider(Path(local.local_root), sandbox=local.local_sandbox,
                             uid_base=local.local_sandbox_uid_base, strict=settings.strict,
                             runs_workloads=runs_workloads)
    except ProviderError as exc:  # a sandbox this host cannot give: refuse to start
        raise ConfigError([str(exc)], settings.profile) from exc


def node_report(settings: Settings, name: str | None = None) -> gpuaas.NodeReport:
    """This host as an agent reports it: its GPUs from NVML or the profile's static list."""
    try:
        inv = gpu_inventory(settings).discover()
        devices, source, simulated = inv.devices, inv.source, inv.simulated
    except InventoryUnavailable:
        devices, source, simulated = (), "none", True
    labels = {"inventory": source}
    if simulated:
        labels["simulated"] = "true"
    return gpuaas.NodeReport(
        name=name or socket.gethostname(), inventory_source=source, simulated=simulated,
        labels=labels, gpus=tuple(gpuaas.GpuReport(
            index=d.index, model=d.model, name=d.name, memory_gib=d.memory_gib, uuid=d.uuid,
            healthy=d.healthy, health_detail=d.health_detail) for d in devices))


def build_agent(settings: Settings, db: Database, clock: Clock,
                provider: ComputeProvider | None = None,
                node_name: str | None = None, *, collect_metrics: bool = True) -> gpuaas.NodeAgent:
    """This host's node agent working on the database directly (tests; the control plane's
    own processes). A remote host's agent uses its link instead (``runtime/node_agent.py``)."""
    return agent_over(settings, gpuaas.DbNodeStore(db, clock=clock), clock, provider=provider,
                      node_name=node_name, collect_metrics=collect_metrics)


def agent_over(settings: Settings, store: gpuaas.NodeStore, clock: Clock, *,
               provider: ComputeProvider | None = None,
               node_name: str | None = None, collect_metrics: bool = True) -> gpuaas.NodeAgent:
    """A node agent on ``store``. It heartbeats three times per node timeout (and at least
    once per usage window, which the heartbeat reports); its leases last one node timeout,
    so a SIGKILLed agent's instances are taken over by the next agent within that time.
    Each heartbeat carries the metrics of this host's GPUs and workloads (NVML, or the
    simulation of the profile's simulated GPUs) unless ``collect_metrics`` is False."""
    timeout = settings.node_heartbeat_timeout_seconds
    meter = settings.usage_report_interval_seconds
    provider = provider or compute_provider(settings)
    return gpuaas.NodeAgent(
        store=store, provider=provider,
        report=lambda: node_report(settings, node_name), clock=clock,
        meter_interval=timedelta(seconds=meter),
        heartbeat_interval=timedelta(seconds=min(max(1.0, timeout / 3), meter)),
        lease_ttl=timedelta(seconds=max(timeout, 3.0)),
        metrics=metrics_collector(settings, provider, clock) if collect_metrics else None)


def agent_controllers(settings: Settings, agent: gpuaas.NodeAgent) -> list[Controller]:
    """The heartbeat (node, leases, usage: one write transaction) and the reconcile loop of
    one node agent. A failing heartbeat is retried within its interval (the node must not
    look silent); a failing pass backs off. The reconcile loop hands the agent's leases back
    when the runner stops."""
    beat = agent.heartbeat_interval.total_seconds()
    connected = getattr(agent.store, "connected", lambda: True)

    def when_connected(fn: Callable[[], object]) -> Callable[[], object]:
        # An agent on a link that is down skips its passes quietly (its client reconnects
        # with backoff and logs that); a pass failing mid-way still fails loudly.
        return lambda: fn() if connected() else 0

    return [
        Controller(name="gpuaas-agent-heartbeat", interval_seconds=beat,
                   run_once=when_connected(agent.heartbeat), max_backoff_seconds=beat),
        Controller(name="gpuaas-agent",
                   interval_seconds=min(settings.controller_interval_seconds, 0.5),
                   run_once=when_connected(agent.reconcile_once),
                   on_stop=when_connected(agent.release_leases)),
    ]


def seed_default_prices(session: Session) -> billing.PriceList | None:
    """A default USD price list for the GPUaaS meters, when no default list exists."""
    book = billing.PriceBook(session)
    try:
        book.resolve("", "gpu_seconds", "H100", datetime.now(UTC))
        return None
    except Exception:
        pass
    return billing.create_price_list(session, actor=SEED_ACTOR, spec=billing.PriceListCreate(
        org_id=None, currency="USD", effective_from=datetime(2020, 1, 1, tzinfo=UTC),
        prices=[billing.PriceIn(meter=m, dimension_value=d, unit_price=p, per_quantity=1)
                for m, d, p in DEFAULT_PRICES]))


def prepare(settings: Settings, db: Database) -> None:
    """What GPUaaS needs in the database before it runs: its meters, and demo prices."""
    prepare_meters_and_prices(db, seed_prices=settings.seed_default_prices)


def prepare_meters_and_prices(db: Database, *, seed_prices: bool) -> None:
    with db.transaction() as session:
        declare_product_meters(session)
        gpuaas.ensure_default_types(session)
        if seed_prices:
            seed_default_prices(session)


def controllers(settings: Settings, db: Database, clock: Clock, *,
                agent: gpuaas.NodeAgent | None = None) -> list[Controller]:
    interval = settings.controller_interval_seconds
    timeout = timedelta(seconds=settings.node_heartbeat_timeout_seconds)
    consumer = gpuaas.BudgetStopConsumer(db, clock=clock)

    def schedule() -> int:
        with db.transaction() as session:
            return len(gpuaas.schedule_pass(session, now=clock.now()))

    started = clock.now()

    def monitor() -> int:
        with db.transaction() as session:
            # A control plane that was down itself gives the agents one timeout to come
            # back over their links before it takes their nodes for silent.
            down = 0 if clock.now() - started < timeout else gpuaas.mark_silent_nodes_down(
                session, now=clock.now(), timeout=timeout)
            return down + gpuaas.enforce_drains(session, now=clock.now())

    found = [
        Controller(name="gpuaas-scheduler", interval_seconds=min(interval, 0.5),
                   run_once=schedule),
        Controller(name="gpuaas-node-monitor", interval_seconds=interval, run_once=monitor),
        # Acts on an exhausted budget soon after the rater announces it (a cheap outbox read).
        Controller(name="gpuaas-budget-stop", interval_seconds=min(interval, 1.0),
                   run_once=consumer.run_once),
    ]
    if agent is not None:
        found += agent_controllers(settings, agent)
    return found


def instance_logs(settings: Settings, provider_name: str | None, ref: str | None, *,
                  offset: int, tail_lines: int | None, ended: bool,
                  node_id: str | None = None,
                  links: NodeLinkHub | None = None) -> gpuaas.LogOutput:
    """A workload's output, asked of its node's agent over the node's link (relayed to the
    API process holding it if need be). A node without a link (its agent works on the
    database: tests, or `aicloud agent` without --url) is read through this host's
    provider."""
    if provider_name is None or ref is None:  # not started (yet)
        return gpuaas.LogOutput(data="", offset=offset, next_offset=offset, complete=ended)
    if links is not None and node_id is not None and links.has_link(node_id):
        out = links.call(node_id, "logs.read", {"provider": provider_name, "ref": ref,
                                                "offset": offset, "tail_lines": tail_lines})
        return gpuaas.LogOutput(
            data=base64.b64decode(out["data"]).decode("utf-8", "replace"),
            offset=int(out["offset"]), next_offset=int(out["next_offset"]),
            complete=bool(out["complete"]))
    provider = compute_provider(settings, runs_workloads=False)
    try:
        chunk = provider.logs(WorkloadHandle(provider_name, ref), offset=offset,
                              tail_lines=tail_lines)
    except WorkloadNotFound:
        return gpuaas.LogOutput(data="", offset=offset, next_offset=offset, complete=True)
    return gpuaas.LogOutput(data=chunk.data.decode("utf-8", "replace"), offset=chunk.offset,
                            next_offset=chunk.next_offset, complete=chunk.complete)
