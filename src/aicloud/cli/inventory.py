"""``aicloud inventory``: the GPUs this node reports, and where that came from."""

from __future__ import annotations

from dataclasses import asdict

import typer

from aicloud.adapters.inventory.base import InventoryUnavailable
from aicloud.cli.common import ProfileOption, settings_or_exit
from aicloud.cli.output import OutputFormat, OutputOption, console, emit, err_console
from aicloud.runtime.adapters import gpu_inventory

app = typer.Typer(help="GPU inventory of this node.", no_args_is_help=True)


@app.command()
def show(profile: ProfileOption = None, output: OutputOption = OutputFormat.table) -> None:
    """Read the GPUs (NVML, or the profile's static list) and say which source was used."""
    settings = settings_or_exit(profile)
    try:
        report = gpu_inventory(settings).discover()
    except InventoryUnavailable as exc:
        err_console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(1) from None
    devices = [asdict(d) for d in report.devices]
    if output == OutputFormat.json:
        emit({"source": report.source, "simulated": report.simulated, "detail": report.detail,
              "devices": devices}, output)
        return
    label = " [yellow](SIMULATED)[/yellow]" if report.simulated else ""
    console.print(f"source: [bold]{report.source}[/bold]{label} - {report.detail}")
    emit(devices, output, columns=["index", "model", "memory_gib", "healthy", "uuid",
                                   "health_detail"])
