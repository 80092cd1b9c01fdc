"""`aicloud nodes join-token` / `revoke` and `aicloud agent --url` refusals, through the CLI
against the real API on a socket."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest
from typer.testing import CliRunner

from aicloud.cli.main import app
from aicloud.platform import iam
from aicloud.products import gpuaas
from aicloud.shared.db import Database
from tests.conftest import LiveServer

PASSWORD = "correct horse battery staple"


@pytest.fixture
def cli_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("AICLOUD_CONFIG_DIR", str(tmp_path / "cfg"))
    for var in ("AICLOUD_URL", "AICLOUD_TOKEN", "AICLOUD_JOIN_TOKEN"):
        monkeypatch.delenv(var, raising=False)
    return tmp_path / "cfg"


def test_join_token_then_join_then_revoke(sqlite_db: Database, tmp_path: Path,
                                          cli_env: Path) -> None:
    from aicloud.runtime import build_context, node_agent
    from tests.conftest import make_settings

    ctx = build_context(make_settings(sqlite_db), sqlite_db)
    with sqlite_db.transaction() as s:
        iam.bootstrap_admin(s, email="root@example.org", password=PASSWORD)
    runner = CliRunner()

    def cli(*args: str, code: int = 0) -> str:
        result = runner.invoke(app, list(args))
        assert result.exit_code == code, (args, result.output)
        return result.output

    with LiveServer(ctx) as server:
        cli("login", "--url", server.url, "--email", "root@example.org", "--password",
            PASSWORD)
        shown = cli("nodes", "join-token", "--expires", "30m", "--uses", "2")
        assert "aicnj_" in shown and "Shown once" in shown
        made = json.loads(cli("nodes", "join-token", "--expires", "2h", "-o", "json"))
        assert made["max_uses"] == 1 and made["token"].startswith("aicnj_")
        assert "expires_in_seconds" in cli("nodes", "join-token", "--expires", "10s", code=1)
        bad = runner.invoke(app, ["nodes", "join-token", "--expires", "soon"])
        assert bad.exit_code == 2 and "30m" in bad.output
        listed = cli("nodes", "join-tokens", "-o", "json")
        assert made["token"] not in listed and len(json.loads(listed)) == 2

        # The agent's side: join (as `aicloud agent --url --token` does), keep it 0600.
        state = tmp_path / "state"
        report = gpuaas.NodeReport(name="gpu-a", inventory_source="static", simulated=True,
                                   gpus=())
        creds, joined = node_agent.credentials_for(server.url, made["token"], state, report)
        assert joined and stat.S_IMODE(node_agent.state_path(state).stat().st_mode) == 0o600
        again, joined = node_agent.credentials_for(server.url, None, state, report)
        assert not joined and again == creds  # a restart reuses it, no token needed
        rotated = node_agent.rotate(creds, state)
        assert rotated.credential != creds.credential
        assert node_agent.load_credentials(state) == rotated
        with pytest.raises(node_agent.JoinFailed, match="HTTP 401"):
            node_agent.rotate(creds, tmp_path / "old")  # the old one no longer works
        creds = rotated
        with pytest.raises(node_agent.JoinFailed, match="--token"):
            node_agent.credentials_for(server.url, None, tmp_path / "empty", report)
        with pytest.raises(node_agent.JoinFailed, match="HTTP 401"):
            node_agent.credentials_for(server.url, made["token"], tmp_path / "x", report)

        revoked = json.loads(cli("nodes", "revoke", creds.node_id, "--reason", "test",
                                 "-o", "json"))
        assert revoked["state"] == "cordoned"
        assert "revoked" in cli("nodes", "uncordon", creds.node_id, code=1)

    # Without --url, --token makes no sense: a clear usage error.
    result = runner.invoke(app, ["agent", "--token", "x"])
    assert result.exit_code == 2 and "--url" in result.output
