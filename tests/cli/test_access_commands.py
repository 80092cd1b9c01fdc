"""`aicloud endpoints` against a real server: publish, keys (secret shown once), revoke,
unpublish."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from aicloud.cli.main import app
from aicloud.platform import audit, billing, iam
from aicloud.products import gpuaas
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


def test_endpoints_commands(sqlite_db: Database, cli_env: Path) -> None:
    ctx = build_context(make_settings(sqlite_db), sqlite_db)
    actor = audit.Actor(id="t")
    with sqlite_db.transaction() as s:
        iam.bootstrap_admin(s, email="root@example.org", password=PASSWORD)
        org = iam.create_org(s, "acme", actor=actor)
        prj = iam.create_project(s, name="p", org_id=org.id, actor=actor)
        billing.top_up(s, actor=actor, org_id=org.id, amount=10_000_000, currency="USD",
                       idempotency_key="cli")
        gpuaas.register_node(s, gpuaas.NodeReport(
            name="n1", inventory_source="static", simulated=True,
            gpus=(gpuaas.GpuReport(0, "H100", "H100 (simulated)", 80),)),
            actor=actor, now=ctx.clock.now())
    runner = CliRunner()

    def cli(*args: str) -> str:
        result = runner.invoke(app, list(args))
        assert result.exit_code == 0, (args, result.output)
        return result.output

    with LiveServer(ctx) as server:
        cli("login", "--url", server.url, "--email", "root@example.org", "--password",
            PASSWORD)
        inst = json.loads(cli("instances", "launch", "--project", prj.id, "--type",
                              "gpu.h100.1x", "--template", "api-app", "-o", "json"))
        ep = json.loads(cli("endpoints", "publish", "--project", prj.id, "--name", "chat",
                            "--instance", inst["id"], "-o", "json"))
        assert ep["path"] == "/endpoints/chat/"
        again = runner.invoke(app, ["endpoints", "publish", "--project", prj.id, "--name",
                                    "chat", "--instance", inst["id"]])
        assert again.exit_code != 0 and "already exists" in again.output
        assert [e["name"] for e in json.loads(cli("endpoints", "list", "--project", prj.id,
                                                  "-o", "json"))] == ["chat"]
        key = json.loads(cli("endpoints", "keys", "create", ep["id"], "--name", "ci",
                             "--limit", "10", "--window", "1", "-o", "json"))
        assert key["secret"].startswith("aiep_") and key["rate_limit_requests"] == 10
        listed = json.loads(cli("endpoints", "keys", "list", ep["id"], "-o", "json"))
        assert [k["id"] for k in listed] == [key["id"]] and "secret" not in listed[0]
        revoked = json.loads(cli("endpoints", "keys", "revoke", key["id"], "-o", "json"))
        assert revoked["revoked_at"] is not None
        assert "unpublished" in cli("endpoints", "unpublish", ep["id"])
        assert json.loads(cli("endpoints", "list", "--project", prj.id, "-o", "json")) == []
