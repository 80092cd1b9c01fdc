"""Amounts and counts typed on the command line are plain decimals: Decimal() and int() alone
also took "1e3", "1_000", " 5", "+5", "NaN" and "Infinity". A refused value exits 2 before any
request (the API here is a closed port: a request would exit 1, "cannot reach the API")."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from aicloud.cli.main import app
from tests.conftest import free_port

BAD_AMOUNTS = ["1e3", "1E3", "1_000", " 5", "5 ", "+5", "NaN", "Infinity", "-Infinity",
               "0x10", "1.", ".5", "1.0000001", "1,5", "٣", "", "0", "0.000000"]


@pytest.fixture
def closed_api(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AICLOUD_CONFIG_DIR", str(tmp_path / "cfg"))
    monkeypatch.setenv("AICLOUD_URL", f"http://127.0.0.1:{free_port()}")
    monkeypatch.setenv("AICLOUD_TOKEN", "unused")


def _run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, list(args))
    return result.exit_code, result.output


@pytest.mark.usefixtures("closed_api")
@pytest.mark.parametrize("amount", BAD_AMOUNTS)
def test_bad_amounts_are_refused_before_any_request(amount: str) -> None:
    for command in (["billing", "top-up", "--org", "org_x", "--key", "k", "--amount", amount],
                    ["billing", "holds", "create", "--org", "org_x", "--reason", "r",
                     "--key", "k", "--amount", amount],
                    ["billing", "budgets", "create", "--scope", "org_x", "--amount", amount]):
        code, output = _run(*command)
        assert code == 2, (command, output)
        assert "amount" in output, output


@pytest.mark.usefixtures("closed_api")
def test_signs_counts_and_prices_are_strict_too() -> None:
    refused = [
        ["billing", "top-up", "--org", "o", "--key", "k", "--amount", "-5"],
        ["billing", "adjust", "--org", "o", "--key", "k", "--reason", "r", "--amount", "--5"],
        ["billing", "adjust", "--org", "o", "--key", "k", "--reason", "r", "--amount", "-1e3"],
        ["billing", "holds", "create", "--org", "o", "--reason", "r", "--key", "k",
         "--amount", "5", "--ttl", "1_0"],
        ["billing", "budgets", "create", "--scope", "o", "--amount", "5", "--threshold", "5_0"],
        ["billing", "prices", "create", "--effective-from", "2026-01-01", "--discount-bp", "1e2"],
        ["billing", "prices", "create", "--effective-from", "2026-01-01",
         "--price", "gpu_seconds=1e3/3600"],
        ["billing", "prices", "create", "--effective-from", "2026-01-01",
         "--price", "gpu_seconds=2.50/36_00"],
    ]
    for command in refused:
        code, output = _run(*command)
        assert code == 2, (command, output)
    accepted = [
        ["billing", "top-up", "--org", "o", "--key", "k", "--amount", "12.50"],
        ["billing", "adjust", "--org", "o", "--key", "k", "--reason", "r", "--amount", "-1.5"],
        ["billing", "prices", "create", "--effective-from", "2026-01-01",
         "--price", "gpu_seconds:H100=2.50/3600"],
    ]
    for command in accepted:  # parsed, then the closed port
        code, output = _run(*command)
        assert code == 1 and "cannot reach the API" in output, (command, output)
