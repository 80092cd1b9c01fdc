"""``aicloud agent``: the node agent of this machine (registers it, heartbeats, runs the
instances placed on it through the local provider)."""

from __future__ import annotations

import logging
import signal
from typing import Annotated

import typer

from aicloud.cli.common import ProfileOption, context_or_exit
from aicloud.cli.output import console, fail
from aicloud.runtime import gpuaas as gpuaas_runtime
from aicloud.shared.config import ConfigError
from aicloud.shared.controllers import ControllerRunner
from aicloud.shared.db import migrate
from aicloud.shared.gc_tuning import tune_for_server
from aicloud.shared.logging import configure_logging

log = logging.getLogger(__name__)

NodeNameOption = Annotated[str | None, typer.Option(
    "--node-name", help="Name this node registers under (default: the host name).")]


def agent(profile: ProfileOption = None, node_name: NodeNameOption = None) -> None:
    """Run the node agent for this machine. It uses the database directly, like `worker`:
    on several hosts, each node must reach the control plane's PostgreSQL."""
    ctx = context_or_exit(profile, validate=True)
    configure_logging(ctx.settings.log_format, ctx.settings.log_level)
    if not migrate.is_up_to_date(ctx.db):
        raise fail("the database schema is not at head; run `aicloud db upgrade` first", 2)
    ctx.prepare_products()
    try:
        node_agent = gpuaas_runtime.build_agent(ctx.settings, ctx.db, ctx.clock,
                                                node_name=node_name)
    except ConfigError as exc:  # e.g. a strict profile on a host without the sandbox
        raise fail(str(exc), 2) from None
    report = node_agent.report()
    node_agent.heartbeat()
    kind = "simulated" if report.simulated else "hardware"
    console.print(f"node {report.name} ({node_agent.node_id}): {len(report.gpus)} GPU(s) from "
                  f"{report.inventory_source} inventory ({kind}); workloads under "
                  f"{ctx.settings.providers.local_root}")
    runner = ControllerRunner(gpuaas_runtime.agent_controllers(ctx.settings, node_agent))
    tune_for_server()

    def _stop(signum: int, _frame: object) -> None:
        log.info("signal %s: agent stopping after the current pass (workloads keep running)",
                 signum)
        runner.stop()

    signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGTERM, _stop)
    runner.start()
    console.print("agent running. Ctrl-C stops it; running instances keep running and are "
                  "re-attached when it starts again.")
    runner.wait()
    ctx.db.dispose()
