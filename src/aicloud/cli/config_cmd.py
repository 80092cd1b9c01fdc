"""``aicloud config``: the effective configuration."""

from __future__ import annotations

import typer

from aicloud.cli.common import ProfileOption, settings_or_exit
from aicloud.cli.output import OutputFormat, OutputOption, emit, err_console

app = typer.Typer(help="Inspect configuration.", no_args_is_help=True)


@app.command()
def show(profile: ProfileOption = None, output: OutputOption = OutputFormat.table) -> None:
    """Print the effective configuration (secrets masked) and any safety problems."""
    settings = settings_or_exit(profile)
    data = settings.masked()
    data["safety_problems"] = settings.safety_problems()
    emit(data, output, title=f"profile {settings.profile}")
    if settings.strict and data["safety_problems"] and output == OutputFormat.table:
        err_console.print(f"[yellow]profile {settings.profile} would refuse to start[/yellow]")
        raise typer.Exit(0)
