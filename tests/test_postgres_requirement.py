"""The PostgreSQL half of the suite is never skipped silently: loud locally, fatal in CI."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TARGET = "tests/shared/test_primitives.py::test_utc_datetimes_come_back_aware"


def _run(ci: bool) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("CI", "PYTEST_XDIST_WORKER")}
    env["AICLOUD_TEST_POSTGRES_URL"] = "postgresql://postgres@127.0.0.1:1/unreachable"
    if ci:
        env["CI"] = "true"
    return subprocess.run([sys.executable, "-m", "pytest", "-p", "no:xdist", "-q", TARGET],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)


def test_unreachable_postgres_is_a_loud_skip_on_a_laptop() -> None:
    result = _run(ci=False)
    assert result.returncode == 0, result.stdout
    assert "1 passed, 1 skipped" in result.stdout
    assert "POSTGRESQL TESTS SKIPPED" in result.stdout


def test_unreachable_postgres_fails_in_ci() -> None:
    result = _run(ci=True)
    assert result.returncode != 0
    assert "CI requires it" in result.stdout
