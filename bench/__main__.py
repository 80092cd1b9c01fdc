"""Run every benchmark module (or those named) several times and print ranges.

Each module's ``run()`` measures our path and its baseline in the same run; running it
``--runs`` times (default 3) interleaves ours and the baseline across runs, and every figure
is printed as min..max over the runs with the 1-minute load average seen at each run.
"""

from __future__ import annotations

import argparse
import importlib
import json
import pkgutil
import sys
from pathlib import Path

from rich.console import Console
from rich.table import Table

import bench
from aicloud.shared.gc_tuning import tune_for_server
from bench.harness import Summary, load_average, span


def _module_names() -> list[str]:
    return sorted(m.name for m in pkgutil.iter_modules([str(Path(bench.__file__).parent)])
                  if m.name.startswith("bench_"))


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="make bench", description=__doc__)
    parser.add_argument("modules", nargs="*", help=f"any of: {', '.join(_module_names())}")
    parser.add_argument("--runs", type=int, default=3, help="runs per module (default 3)")
    parser.add_argument("--output", choices=("table", "json"), default="table")
    args = parser.parse_args(argv)
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    names = args.modules or _module_names()
    unknown = sorted(set(names) - set(_module_names()))
    if unknown:
        parser.error(f"unknown benchmark module(s): {', '.join(unknown)}")
    modules = [importlib.import_module(f"bench.{name}") for name in names]
    # Measure under the collector settings the server processes run with.
    tune_for_server()
    console = Console(width=max(Console().width, 200), stderr=args.output == "json")
    summaries: dict[str, Summary] = {}
    for name, module in zip(names, modules, strict=True):
        for i in range(args.runs):
            with console.status(f"running {name} ({i + 1}/{args.runs})…"):
                load = load_average()
                results = module.run()
            for m in results:
                summaries.setdefault(m.name, Summary(m)).add(m, load)
    if args.output == "json":
        print(json.dumps([s.as_dict() for s in summaries.values()], indent=2))
        return 0
    table = Table(title=f"benchmarks over {args.runs} run(s): min..max "
                        "(ratio = ours vs baseline, >1 is better)")
    for col in ("benchmark", "value", "baseline", "baseline value", "ratio", "target",
                "load 1m"):
        table.add_column(col)
    for s in summaries.values():
        m = s.first
        table.add_row(m.name, f"{span(s.values, ',.1f')} {m.unit}", m.baseline_name or "-",
                      f"{span(s.baselines, ',.1f')} {m.unit}" if s.baselines else "-",
                      f"{span(s.ratios, '.2f')}x" if s.ratios else "-", m.target or "-",
                      span(s.loads, ".2f"))
    console.print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
