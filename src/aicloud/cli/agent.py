"""``aicloud agent``: the node agent of this machine (registers it, heartbeats, runs the
instances placed on it through the local provider).

With ``--url`` (a host of the pool) it talks only to the API: the first start joins with
``--token`` and keeps the node credential in ``--state-dir`` (0600); later starts reuse it.
Without ``--url`` it works on the profile's database directly (the control plane's own
host, or a development setup)."""

from __future__ import annotations

import logging
import signal
from pathlib import Path
from typing import Annotated

import typer

from aicloud.cli.common import ProfileOption, context_or_exit, settings_or_exit
from aicloud.cli.output import console, fail
from aicloud.runtime import gpuaas as gpuaas_runtime
from aicloud.runtime import node_agent
from aicloud.shared.clock import SystemClock
from aicloud.shared.config import ConfigError
from aicloud.shared.controllers import ControllerRunner
from aicloud.shared.db import migrate
from aicloud.shared.gc_tuning import tune_for_server
from aicloud.shared.logging import configure_logging

log = logging.getLogger(__name__)

NodeNameOption = Annotated[str | None, typer.Option(
    "--node-name", help="Name this node registers under (default: the host name).")]
UrlOption = Annotated[str | None, typer.Option(
    "--url", help="The control plane's API, e.g. https://cloud.example.org. The agent "
                  "then talks only to it (one WebSocket); no database access.")]
TokenOption = Annotated[str | None, typer.Option(
    "--token", help="A join token (`aicloud nodes join-token`); needed on the first start "
                    "only. Prefer AICLOUD_JOIN_TOKEN to keep it out of the process list.",
    envvar="AICLOUD_JOIN_TOKEN")]
RotateOption = Annotated[bool, typer.Option(
    "--rotate-credential", help="Replace the node credential before starting (the old one "
                                "stops working at once).")]
StateDirOption = Annotated[Path | None, typer.Option(
    "--state-dir", help="Where the node credential is kept (node.json, mode 0600); default "
                        "<local_root>/../agent.")]


def agent(profile: ProfileOption = None, node_name: NodeNameOption = None,
          url: UrlOption = None, token: TokenOption = None,
          state_dir: StateDirOption = None, rotate_credential: RotateOption = False) -> None:
    """Run the node agent for this machine: with --url over the API (join once with
    --token), else on the profile's database (like `worker`)."""
    if url is not None:
        _run_linked(profile, url, token, state_dir, node_name, rotate_credential)
        return
    if token is not None or state_dir is not None or rotate_credential:
        raise fail("--token, --state-dir and --rotate-credential need --url (the API)", 2)
    ctx = context_or_exit(profile, validate=True)
    configure_logging(ctx.settings.log_format, ctx.settings.log_level)
    if not migrate.is_up_to_date(ctx.db):
        raise fail("the database schema is not at head; run `aicloud db upgrade` first", 2)
    ctx.prepare_products()
    try:
        node_agent_ = gpuaas_runtime.build_agent(ctx.settings, ctx.db, ctx.clock,
                                                 node_name=node_name)
    except ConfigError as exc:  # e.g. a strict profile on a host without the sandbox
        raise fail(str(exc), 2) from None
    report = node_agent_.report()
    node_agent_.heartbeat()
    kind = "simulated" if report.simulated else "hardware"
    console.print(f"node {report.name} ({node_agent_.node_id}): {len(report.gpus)} GPU(s) "
                  f"from {report.inventory_source} inventory ({kind}); workloads under "
                  f"{ctx.settings.providers.local_root}")
    _run(ControllerRunner(gpuaas_runtime.agent_controllers(ctx.settings, node_agent_)))
    ctx.db.dispose()


def _run(runner: ControllerRunner) -> None:
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


def _run_linked(profile: str | None, url: str, token: str | None, state_dir: Path | None,
                node_name: str | None, rotate: bool) -> None:
    settings = settings_or_exit(profile)
    configure_logging(settings.log_format, settings.log_level)
    where = state_dir or Path(settings.providers.local_root).resolve().parent / "agent"
    try:
        provider = gpuaas_runtime.compute_provider(settings)
        report = gpuaas_runtime.node_report(settings, node_name)
        creds, joined = node_agent.credentials_for(url, token, where, report)
        if rotate and not joined:
            creds = node_agent.rotate(creds, where)
            console.print(f"node credential rotated (now {creds.credential_id})")
        linked = node_agent.build_linked_agent(settings, creds, SystemClock(),
                                               provider=provider, node_name=report.name)
    except (ConfigError, node_agent.JoinFailed) as exc:
        raise fail(str(exc), 2) from None
    except OSError as exc:
        raise fail(f"cannot reach {url}: {exc}", 3) from None
    kind = "simulated" if report.simulated else "hardware"
    console.print(f"node {creds.node_name} ({creds.node_id}) "
                  f"{'joined' if joined else 'credential from'} {node_agent.state_path(where)}"
                  f"{' (kept there, 0600)' if joined else ''}; {len(report.gpus)} GPU(s) from "
                  f"{report.inventory_source} inventory ({kind}); API {creds.url}")
    linked.link.start()
    if not linked.link.wait_connected(30):
        console.print(f"[yellow]no link to {creds.url} yet; retrying in the background"
                      "[/yellow]")
    runner = ControllerRunner(gpuaas_runtime.agent_controllers(settings, linked.agent))
    refused = _Watch(linked, runner)
    refused.start()
    _run(runner)
    linked.link.stop()
    if linked.link.refused is not None:
        raise fail(f"the API refused this node: {linked.link.refused}", 4)


class _Watch:
    """Stops the agent when the API refuses its credential (revoked): retrying is useless."""

    def __init__(self, linked: node_agent.LinkedAgent, runner: ControllerRunner):
        import threading

        self.linked, self.runner = linked, runner
        self.thread = threading.Thread(target=self._loop, daemon=True, name="refusal-watch")

    def start(self) -> None:
        self.thread.start()

    def _loop(self) -> None:
        import time

        while self.linked.link.refused is None:
            time.sleep(0.5)
        log.error("the API refused this node (%s): stopping; workloads keep running",
                  self.linked.link.refused)
        self.runner.stop()
