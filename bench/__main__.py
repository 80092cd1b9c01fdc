"""Run every benchmark module (or those named on the command line) and print a table."""

from __future__ import annotations

import importlib
import pkgutil
import sys
from pathlib import Path

from rich.console import Console
from rich.table import Table

import bench
from aicloud.shared.gc_tuning import tune_for_server


def main(argv: list[str]) -> int:
    names = argv or sorted(
        m.name for m in pkgutil.iter_modules([str(Path(bench.__file__).parent)])
        if m.name.startswith("bench_")
    )
    table = Table(title="benchmarks (ratio = ours vs baseline, >1 is better)")
    for col in ("benchmark", "value", "baseline", "baseline value", "ratio", "target"):
        table.add_column(col)
    console = Console(width=max(Console().width, 180))  # keep table rows readable in logs
    modules = [importlib.import_module(f"bench.{name}") for name in names]
    # Measure under the collector settings the server processes run with.
    tune_for_server()
    for name, module in zip(names, modules, strict=True):
        with console.status(f"running {name}…"):
            results = module.run()
        for m in results:
            ratio = m.ratio
            table.add_row(
                m.name, f"{m.value:,.1f} {m.unit}", m.baseline_name or "-",
                f"{m.baseline_value:,.1f} {m.unit}" if m.baseline_value is not None else "-",
                f"{ratio:.2f}x" if ratio is not None else "-", m.target or "-",
            )
    console.print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
