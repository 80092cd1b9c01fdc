"""``serve``, ``api`` and ``worker``: the long-running processes."""

from __future__ import annotations

import logging
import signal
from typing import Annotated

import typer
import uvicorn
from rich.panel import Panel

from aicloud.api import create_app
from aicloud.api.server import base_url, concurrency, server_config
from aicloud.cli.common import ProfileOption, context_or_exit
from aicloud.cli.output import console, fail
from aicloud.platform import iam
from aicloud.runtime import AppContext
from aicloud.shared.controllers import ControllerRunner
from aicloud.shared.db import migrate
from aicloud.shared.gc_tuning import tune_for_server
from aicloud.shared.logging import configure_logging

log = logging.getLogger(__name__)

HostOption = Annotated[str | None, typer.Option(help="Address to bind (default from profile).")]
PortOption = Annotated[int | None, typer.Option(help="Port to bind (default from profile).")]


def _prepare(ctx: AppContext) -> None:
    """Bring the schema to head (where the profile allows) and create the bootstrap admin."""
    settings = ctx.settings
    configure_logging(settings.log_format, settings.log_level)
    if not migrate.is_up_to_date(ctx.db):
        if not settings.auto_migrate:
            raise fail("the database schema is not at head; run `aicloud db upgrade` first", 2)
        migrate.upgrade(ctx.db)
        log.info("database migrated to %s", ", ".join(migrate.current_revisions(ctx.db)))
    if settings.bootstrap_admin_enabled:
        with ctx.db.transaction() as session:
            if iam.count_users(session) > 0:
                return
            result = iam.bootstrap_admin(session, email=settings.bootstrap_admin_email)
        console.print(Panel.fit(
            f"email:    [bold]{result.user.email}[/bold]\n"
            f"password: [bold]{result.password}[/bold]\n\n"
            "Shown once; only a hash is stored. Log in with `aicloud login`.",
            title="bootstrap admin created",
        ))


def _run_http(ctx: AppContext, host: str | None, port: int | None, *, controllers: bool) -> None:
    settings = ctx.settings
    app = create_app(ctx, run_controllers=controllers)
    config = server_config(app, settings, host=host, port=port)
    # The embedded agent joins and links over loopback, as a remote host would over the
    # network.
    loopback = "127.0.0.1" if config.host in ("0.0.0.0", "", "localhost") else config.host
    ctx.agent_url = base_url(settings, loopback, config.port)
    # Where the other API processes relay a node's requests when this one holds its link.
    ctx.node_links.internal_url = settings.internal_url or ctx.agent_url
    docs = "docs: /docs" if settings.docs_enabled else "docs off"
    limits = concurrency(ctx.db)
    console.print(f"AI Cloud API on {base_url(settings, config.host, config.port)}  ({docs}, "
                  f"profile {settings.profile}, database {ctx.db.dialect}"
                  f"{', controllers in-process' if controllers else ''}; "
                  f"{limits.request_slots} requests on the database at once, "
                  f"{ctx.db.pool_size} connections, {limits.threads} threads). Ctrl-C stops it.")
    tune_for_server()
    server = uvicorn.Server(config)
    try:
        server.run()
    except KeyboardInterrupt:
        pass  # uvicorn re-raises the Ctrl-C it handled after a clean shutdown
    finally:
        ctx.db.dispose()
    if not server.started:  # uvicorn logged why (port in use, unreadable certificate, ...)
        raise typer.Exit(3)


def serve(profile: ProfileOption = None, host: HostOption = None, port: PortOption = None) -> None:
    """Run the API and the background controllers in one process (and, where the profile
    says agent_embedded, the node agent of this machine)."""
    ctx = context_or_exit(profile, validate=True)
    ctx.run_agent = ctx.agent_link = ctx.settings.agent_embedded
    _prepare(ctx)
    _run_http(ctx, host, port, controllers=True)


def api(profile: ProfileOption = None, host: HostOption = None, port: PortOption = None) -> None:
    """Run only the API (controllers run in `aicloud worker` processes)."""
    ctx = context_or_exit(profile, validate=True)
    _prepare(ctx)
    _run_http(ctx, host, port, controllers=False)


def worker(profile: ProfileOption = None) -> None:
    """Run only the background controllers; start as many as you like."""
    ctx = context_or_exit(profile, validate=True)
    configure_logging(ctx.settings.log_format, ctx.settings.log_level)
    if not migrate.is_up_to_date(ctx.db):
        raise fail("the database schema is not at head; run `aicloud db upgrade` first", 2)
    ctx.prepare_products()
    runner = ControllerRunner(ctx.controllers())
    tune_for_server()

    def _stop(signum: int, _frame: object) -> None:
        log.info("signal %s: stopping controllers after their current pass", signum)
        runner.stop()

    signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGTERM, _stop)
    runner.start()
    console.print(f"worker running {len(runner.controllers)} controller(s). Ctrl-C stops it.")
    runner.wait()
    ctx.db.dispose()
