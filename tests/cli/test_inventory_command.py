"""``aicloud inventory show`` as a real process: on this GPU-less machine it says the
inventory is simulated and why."""

from __future__ import annotations

import json
import os
import subprocess
import sys

AICLOUD = [sys.executable, "-m", "aicloud.cli"]


def _run(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("AICLOUD_")}
    return subprocess.run([*AICLOUD, "inventory", "show", *args], capture_output=True,
                          text=True, timeout=60, env={**base, "COLUMNS": "200", **env})


def test_inventory_show_reports_the_source_and_the_simulated_label() -> None:
    out = _run("-o", "json")
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert (data["source"], data["simulated"]) == ("static", True)
    assert "NVML not available" in data["detail"]
    assert [d["index"] for d in data["devices"]] == list(range(8))
    table = _run()
    assert table.returncode == 0 and "(SIMULATED)" in table.stdout and "H100" in table.stdout


def test_inventory_show_fails_clearly_when_nvml_is_required() -> None:
    out = _run(AICLOUD_PROVIDERS__INVENTORY__SOURCE="nvml")
    assert out.returncode == 1
    assert "NVML not available: NVML Shared Library Not Found" in out.stderr
