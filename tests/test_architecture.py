"""The layer contracts hold, and the guard bites when one is crossed."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from aicloud.archguard import check_architecture

SRC = Path(__file__).resolve().parents[1] / "src"


def test_the_tree_keeps_every_contract() -> None:
    results = check_architecture()
    assert len(results) >= 5
    broken = [(r.name, r.crossings) for r in results if not r.kept]
    assert broken == []


@pytest.fixture
def tree_copy(tmp_path: Path) -> Path:
    """A copy of the source tree that a test may break without touching the real one."""
    shutil.copytree(SRC / "aicloud", tmp_path / "aicloud",
                    ignore=shutil.ignore_patterns("__pycache__"))
    return tmp_path


def _report(tree: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(tree), "COLUMNS": "200"}
    return subprocess.run(
        [sys.executable, "-m", "aicloud.cli", "arch", "report", *args],
        env=env, cwd=tree, capture_output=True, text=True, timeout=120,
    )


@pytest.mark.parametrize(
    ("module", "source", "contract"),
    [
        # shared may not reach up into platform
        ("aicloud/shared/leaky.py", "import aicloud.platform.iam\n", "Layers"),
        # adapters depend on shared only
        ("aicloud/adapters/leaky.py", "from aicloud.platform import iam\n", "Adapters"),
        # nobody outside iam reads its tables
        ("aicloud/api/leaky.py", "from aicloud.platform.iam.models import UserModel\n",
         "public module"),
    ],
)
def test_a_forbidden_import_breaks_the_check(
    tree_copy: Path, module: str, source: str, contract: str
) -> None:
    (tree_copy / module).write_text(source)
    enforce = _report(tree_copy, "--mode", "enforce", "-o", "json")
    assert enforce.returncode == 1, enforce.stderr
    data = json.loads(enforce.stdout)
    broken = [c for c in data["contracts"] if not c["kept"]]
    assert any(contract in c["name"] for c in broken), broken
    crossing = module.removesuffix(".py").replace("/", ".")
    assert any(crossing in line for c in broken for line in c["crossings"]), broken

    # report mode lists the same violations but lets the pipeline continue
    report = _report(tree_copy, "--mode", "report")
    assert report.returncode == 0
    assert "BROKEN" in report.stdout and crossing in report.stdout
