"""``aicloud billing`` tenant and staff commands against a real API server."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable
from pathlib import Path

import pytest
from typer.testing import CliRunner

from aicloud.cli.main import app
from aicloud.platform import billing, iam
from aicloud.runtime import AppContext
from aicloud.sdk.client import ApiClient
from aicloud.shared.clock import utcnow
from tests.conftest import LiveServer

PASSWORD = "correct horse battery"


@pytest.fixture
def cli_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("AICLOUD_CONFIG_DIR", str(tmp_path / "cfg"))
    monkeypatch.delenv("AICLOUD_URL", raising=False)
    monkeypatch.delenv("AICLOUD_TOKEN", raising=False)
    return tmp_path / "cfg"


def _runner(runner: CliRunner) -> Callable[..., object]:
    """run(*args): invoke the CLI, check its exit code, and parse its JSON output."""

    def run(*args: str, code: int = 0, fmt: str = "json") -> object:
        result = runner.invoke(app, [*args, "-o", "json"] if fmt == "json" else list(args))
        assert result.exit_code == code, (args, result.output)
        return json.loads(result.output) if code == 0 and fmt == "json" else result.output

    return run


def test_billing_commands_over_the_api(sqlite_ctx: AppContext, cli_env: Path) -> None:
    with sqlite_ctx.db.transaction() as s:
        iam.bootstrap_admin(s, email="root@x.io", password=PASSWORD)
        billing.register_default_meters(s)
    runner = CliRunner()
    run = _runner(runner)
    with LiveServer(sqlite_ctx) as server:
        assert runner.invoke(app, ["login", "--url", server.url, "--email", "root@x.io",
                                   "--password", PASSWORD]).exit_code == 0
        org = run("orgs", "create", "--name", "acme")["id"]
        dep = run("departments", "create", "--org", org, "--name", "research")["id"]
        prj = run("projects", "create", "--department", dep, "--name", "llm")["id"]
        month = utcnow().strftime("%Y-%m")
        run("billing", "prices", "create", "--effective-from", "2020-01-01T00:00:00Z",
            "--price", "gpu_seconds=2.50/3600")
        # default lists only (the dev profile may also have seeded its demo list at start)
        assert {p["org_id"] for p in run("billing", "prices", "list")} == {None}
        contract = run("billing", "prices", "create", "--org", org, "--effective-from",
                       "2020-01-01T00:00:00Z", "--discount-bp", "1000")
        assert run("billing", "prices", "list", "--org", org)[0]["id"] == contract["id"]

        first = run("billing", "top-up", "--org", org, "--amount", "100", "--key", "pay-1")
        again = run("billing", "top-up", "--org", org, "--amount", "100", "--key", "pay-1")
        assert first["id"] == again["id"] and first["amount"] == 100_000_000
        conflict = run("billing", "top-up", "--org", org, "--amount", "7", "--key", "pay-1",
                       code=1, fmt="text")
        assert "pay-1" in str(conflict) or "idempotency" in str(conflict).lower()
        bad = run("billing", "top-up", "--org", org, "--amount", "0.0000001", "--key", "x",
                  code=2, fmt="text")
        assert "6 decimals" in str(bad)
        unknown = run("billing", "top-up", "--org", org, "--amount", "5", "--currency", "XYZ",
                      "--key", "y", code=1, fmt="text")
        assert "unknown currency" in str(unknown)
        run("billing", "adjust", "--org", org, "--amount", "-1.5", "--reason", "support",
            "--key", "adj-1")
        assert run("billing", "credit-limit", "--org", org, "--limit", "20")[
            "credit_limit"] == 20_000_000
        wallet = run("billing", "wallet", "--org", org)
        assert wallet["posted"] == 98_500_000
        assert [t["reason"] for t in run("billing", "transfers", "--org", org)] == [
            "top_up", "adjustment"]
        assert "gpu_seconds" in {m["name"] for m in run("billing", "meters")}

        budget = run("billing", "budgets", "create", "--scope", prj, "--amount", "3",
                     "--threshold", "50", "--threshold", "100")
        assert [b["id"] for b in run("billing", "budgets", "list", "--scope", org)] == [
            budget["id"]]

        start = utcnow().replace(day=1, hour=0, minute=0, second=0, microsecond=0)
        with ApiClient(server.url, _login(server.url)) as c:
            c.post("/usage", {"records": [{
                "resource_id": "inst_1", "project_id": prj, "scope_path": f"/{org}/{dep}/{prj}",
                "meter": "gpu_seconds", "dimension_value": "H100", "quantity": 3600,
                "window_start": start.isoformat(),
                "window_end": start.replace(second=1).isoformat(),  # never in the future
                "idempotency_key": "u1"}]})
        billing.rate_until_idle(sqlite_ctx.db)
        with sqlite_ctx.db.transaction() as s:
            billing.evaluate_budgets(s)

        charge = 2_250_000  # 2.50 USD an hour, 10% contract discount
        statement = run("billing", "statement", "--org", org, "--period", month)
        assert statement["closing_balance"] == 98_500_000 - charge
        rows = list(csv.DictReader(io.StringIO(str(run(
            "billing", "statement", "--org", org, "--period", month, "--format", "csv",
            fmt="text")))))
        assert int(rows[-1]["amount"]) == statement["closing_balance"]
        report = run("billing", "cost-report", "--scope", org, "--from", start.date().isoformat(),
                     "--group-by", "project,meter")
        assert report["total"] == {"USD": charge}
        text = str(run("billing", "cost-report", "--scope", dep, "--group-by", "meter,day",
                       "--format", "csv", fmt="text"))
        assert [r["amount"] for r in csv.DictReader(io.StringIO(text))] == [str(charge)]
        alerts = run("billing", "alerts", "--scope", org, "--period", month)
        assert [a["threshold"] for a in alerts] == [50]
        run("billing", "budgets", "delete", budget["id"])
        assert run("billing", "budgets", "list", "--scope", org) == []
        missing = run("billing", "wallet", "--org", "org_nope", code=1, fmt="text")
        assert "not found" in str(missing).lower()


def _login(url: str) -> str:
    with ApiClient(url) as c:
        return c.post("/auth/login", {"email": "root@x.io", "password": PASSWORD})["token"]


def test_billing_holds_commands_over_the_api(sqlite_ctx: AppContext, cli_env: Path) -> None:
    with sqlite_ctx.db.transaction() as s:
        iam.bootstrap_admin(s, email="root@x.io", password=PASSWORD)
    runner = CliRunner()
    run = _runner(runner)
    with LiveServer(sqlite_ctx) as server:
        assert runner.invoke(app, ["login", "--url", server.url, "--email", "root@x.io",
                                   "--password", PASSWORD]).exit_code == 0
        for cmd in ("create", "list", "show", "post", "void"):
            assert "--output" in runner.invoke(app, ["billing", "holds", cmd, "--help"]).output
        org = run("orgs", "create", "--name", "acme")["id"]
        run("billing", "top-up", "--org", org, "--amount", "100", "--key", "pay-1")
        hold = run("billing", "holds", "create", "--org", org, "--amount", "30.5",
                   "--reason", "admission", "--cause-type", "job", "--cause-id", "job_1",
                   "--ttl", "600", "--key", "h-1")
        assert (hold["amount"], hold["status"], hold["cause_id"]) == (30_500_000, "pending",
                                                                      "job_1")
        assert run("billing", "holds", "create", "--org", org, "--amount", "30.5", "--reason",
                   "admission", "--cause-type", "job", "--cause-id", "job_1", "--ttl", "600",
                   "--key", "h-1")["id"] == hold["id"]
        assert run("billing", "wallet", "--org", org)["available"] == 69_500_000
        assert [h["id"] for h in run("billing", "holds", "list", "--org", org,
                                     "--status", "pending")] == [hold["id"]]
        posted = run("billing", "holds", "post", hold["id"], "--org", org, "--amount", "10",
                     "--key", "p-1")
        assert (posted["status"], posted["posted_amount"]) == ("posted", 10_000_000)
        assert run("billing", "holds", "show", hold["id"], "--org", org)["status"] == "posted"
        assert run("billing", "wallet", "--org", org)["posted"] == 90_000_000
        other = run("billing", "holds", "create", "--org", org, "--amount", "1", "--reason",
                    "test", "--key", "h-2")
        assert run("billing", "holds", "void", other["id"], "--org", org)["status"] == "voided"
        voided = run("billing", "holds", "post", other["id"], "--org", org, "--key", "p-2",
                     code=1, fmt="text")
        assert "voided" in str(voided)
        too_much = run("billing", "holds", "post", hold["id"], "--org", org, "--amount",
                       "1000", "--key", "p-3", code=1, fmt="text")
        assert "posted" in str(too_much)
        bad = run("billing", "holds", "create", "--org", org, "--amount", "1", "--reason", "x",
                  "--currency", "XYZ", "--key", "h-3", code=1, fmt="text")
        assert "unknown currency" in str(bad)
        table = str(run("billing", "holds", "list", "--org", org, fmt="text"))
        assert "┃ id" in table and "status" in table  # a table, not JSON

        sa = run("service-accounts", "create", "--platform", "--name", "product")
        assert sa["org_id"] is None and sa["project_id"] is None
        run("bindings", "create", "--scope", "platform", "--principal", sa["id"], "--role",
            "product-biller")
        both = run("service-accounts", "create", "--platform", "--org", org, "--name", "x",
                   code=2, fmt="text")
        assert "exactly one" in str(both)
