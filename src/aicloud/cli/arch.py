"""``aicloud arch``: the architecture guard."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

import typer

from aicloud.archguard import check_architecture
from aicloud.cli.output import OutputFormat, OutputOption, console, emit, err_console

app = typer.Typer(help="Architecture guard (layer contracts).", no_args_is_help=True)


class Mode(StrEnum):
    report = "report"
    enforce = "enforce"


@app.command()
def report(
    mode: Annotated[Mode, typer.Option(
        help="report: list violations and exit 0 (while migrating code); "
             "enforce: exit 1 on any violation (CI).")] = Mode.enforce,
    output: OutputOption = OutputFormat.table,
) -> None:
    """Print every layer contract and every crossing found."""
    with err_console.status("building the import graph…"):
        results = check_architecture()
    broken = [r for r in results if not r.kept]
    if output == OutputFormat.json:
        emit({"mode": mode.value, "kept": not broken,
              "contracts": [r.__dict__ for r in results]}, output)
    else:
        for r in results:
            mark = "[green]KEPT[/green]  " if r.kept else "[red]BROKEN[/red]"
            console.print(f"{mark} {r.name} [dim]({r.type})[/dim]")
            for crossing in r.crossings:
                console.print(f"         [red]✗[/red] {crossing}")
        console.print(f"\n{len(results) - len(broken)} kept, {len(broken)} broken "
                      f"(mode: {mode.value})")
    if broken and mode == Mode.enforce:
        raise typer.Exit(1)
