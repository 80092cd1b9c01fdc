"""The ``aicloud`` command.

Operator commands (serve, api, worker, db, admin, config, arch) act on the database and
configuration directly and work with the API down. Tenant-facing commands (login, whoami,
and every resource command) are clients of the REST API, so the CLI can never do what the
API would refuse.
"""

from __future__ import annotations

import typer

from aicloud import __version__
from aicloud.cli import access as access_cmds
from aicloud.cli import admin, arch, auth, config_cmd, db, serve
from aicloud.cli import agent as agent_cmd
from aicloud.cli import audit as audit_cmd
from aicloud.cli import billing as billing_cmd
from aicloud.cli import gpuaas as gpuaas_cmds
from aicloud.cli import iam as iam_cmds
from aicloud.cli import idle as idle_cmds
from aicloud.cli import inventory as inventory_cmd
from aicloud.cli import ledger as ledger_cmd
from aicloud.cli import policy as policy_cmds

app = typer.Typer(
    name="aicloud",
    help="AI Cloud: a self-hostable control plane for a multi-tenant GPU cloud.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"aicloud {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                 help="Print the version and exit."),
) -> None:
    pass


app.command(rich_help_panel="Operator")(serve.serve)
app.command(rich_help_panel="Operator")(serve.api)
app.command(rich_help_panel="Operator")(serve.worker)
app.command(rich_help_panel="Operator")(agent_cmd.agent)
app.add_typer(db.app, name="db", rich_help_panel="Operator")
app.add_typer(admin.app, name="admin", rich_help_panel="Operator")
app.add_typer(config_cmd.app, name="config", rich_help_panel="Operator")
app.add_typer(arch.app, name="arch", rich_help_panel="Operator")
app.add_typer(inventory_cmd.app, name="inventory", rich_help_panel="Operator")
app.add_typer(audit_cmd.app, name="audit", rich_help_panel="Operator")
app.add_typer(ledger_cmd.app, name="ledger", rich_help_panel="Operator")
app.add_typer(billing_cmd.app, name="billing", rich_help_panel="Operator")
app.command(rich_help_panel="Tenant (via the API)")(auth.login)
app.command(rich_help_panel="Tenant (via the API)")(auth.logout)
app.command(rich_help_panel="Tenant (via the API)")(auth.whoami)
for _name, _sub in iam_cmds.COMMANDS:
    app.add_typer(_sub, name=_name, rich_help_panel="Tenant (via the API)")
for _name, _sub in gpuaas_cmds.COMMANDS:
    app.add_typer(_sub, name=_name, rich_help_panel="Tenant (via the API)")
for _name, _sub in (*policy_cmds.COMMANDS, *idle_cmds.COMMANDS):
    app.add_typer(_sub, name=_name, rich_help_panel="Tenant (via the API)")
for _name, _sub in access_cmds.COMMANDS:
    app.add_typer(_sub, name=_name, rich_help_panel="Tenant (via the API)")


def main() -> None:
    app()
