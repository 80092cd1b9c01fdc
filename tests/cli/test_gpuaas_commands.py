"""`aicloud instances` and `aicloud nodes` against a real server with its embedded agent."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from aicloud.cli.main import app
from aicloud.platform import audit, billing, iam
from aicloud.runtime import build_context
from aicloud.shared.db import Database
from tests.conftest import LiveServer, make_settings

PASSWORD = "correct horse battery staple"


@pytest.fixture
def cli_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("AICLOUD_CONFIG_DIR", str(tmp_path / "cfg"))
    monkeypatch.delenv("AICLOUD_URL", raising=False)
    monkeypatch.delenv("AICLOUD_TOKEN", raising=False)
    return tmp_path / "cfg"


def test_instances_and_nodes_commands(sqlite_db: Database, tmp_path: Path,
                                      cli_env: Path) -> None:
    settings = make_settings(sqlite_db, controller_interval_seconds=0.2, providers={
        "compute": "local", "local_root": str(tmp_path / "wl"),
        "inventory": {"source": "static", "simulated": True, "static_gpus": [
            {"index": i, "model": "H100", "memory_gib": 80} for i in range(8)]}})
    ctx = build_context(settings, sqlite_db)
    ctx.run_agent = True
    with sqlite_db.transaction() as s:
        iam.bootstrap_admin(s, email="root@example.org", password=PASSWORD)
        org = iam.create_org(s, "acme", actor=audit.Actor(id="t"))
        prj = iam.create_project(s, name="p", org_id=org.id, actor=audit.Actor(id="t"))
        billing.top_up(s, actor=audit.Actor(id="t"), org_id=org.id, amount=10_000_000,
                       currency="USD", idempotency_key="cli")
    runner = CliRunner()

    def cli(*args: str) -> str:
        result = runner.invoke(app, list(args))
        assert result.exit_code == 0, (args, result.output)
        return result.output

    with LiveServer(ctx, run_controllers=True) as server:
        cli("login", "--url", server.url, "--email", "root@example.org", "--password",
            PASSWORD)
        deadline = time.monotonic() + 10
        while not json.loads(cli("nodes", "list", "-o", "json")):
            assert time.monotonic() < deadline
            time.sleep(0.1)
        assert "SIMULATED" in cli("nodes", "list")
        [node] = json.loads(cli("nodes", "list", "-o", "json"))
        assert json.loads(cli("nodes", "cordon", node["id"], "-o", "json"))["state"] == \
            "cordoned"
        launched = json.loads(cli("instances", "launch", "--project", prj.id, "--type",
                                  "gpu.h100.1x", "--template", "batch", "--command", "sh",
                                  "--command", "-c", "--command", "echo hello from gpu",
                                  "--idempotency-key", "b1", "-o", "json"))
        time.sleep(0.5)
        waiting = json.loads(cli("instances", "get", launched["id"], "-o", "json"))
        assert waiting["state"] == "admitted" and waiting["queue_position"] == 1
        assert "queue_position" in cli("instances", "get", launched["id"])
        cli("nodes", "uncordon", node["id"])
        out = cli("instances", "logs", launched["id"], "--follow")
        assert "hello from gpu" in out
        deadline = time.monotonic() + 10
        while json.loads(cli("instances", "get", launched["id"], "-o", "json"))["state"] != \
                "succeeded":
            assert time.monotonic() < deadline
            time.sleep(0.1)
        table = cli("instances", "get", launched["id"])
        assert "running -> succeeded" in table and "exit 0" in table
        listed = json.loads(cli("instances", "list", "--project", prj.id, "-o", "json"))
        assert [i["id"] for i in listed] == [launched["id"]]
        bad = runner.invoke(app, ["instances", "launch", "--project", prj.id, "--type",
                                  "gpu.nope"])
        assert bad.exit_code == 1 and "unknown instance type 'gpu.nope'" in bad.output
        stop = json.loads(cli("instances", "stop", launched["id"], "-o", "json"))
        assert stop["state"] == "succeeded"  # already ended: stopping again is a no-op
