"""Tenant-facing commands are clients of the REST API."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest
from typer.testing import CliRunner

from aicloud.cli.main import app
from aicloud.platform import iam
from aicloud.runtime import AppContext
from tests.conftest import LiveServer

PASSWORD = "correct horse battery"


@pytest.fixture
def cli_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("AICLOUD_CONFIG_DIR", str(tmp_path / "cfg"))
    monkeypatch.delenv("AICLOUD_URL", raising=False)
    monkeypatch.delenv("AICLOUD_TOKEN", raising=False)
    return tmp_path / "cfg"


def test_login_stores_a_private_token_and_whoami_uses_it(
    sqlite_ctx: AppContext, cli_env: Path
) -> None:
    with sqlite_ctx.db.transaction() as s:
        iam.create_user(s, email="eve@x.io", password=PASSWORD)
    runner = CliRunner()
    with LiveServer(sqlite_ctx) as server:
        result = runner.invoke(app, ["login", "--url", server.url, "--email", "eve@x.io",
                                     "--password", PASSWORD])
        assert result.exit_code == 0, result.output
        creds = cli_env / "credentials.json"
        assert stat.S_IMODE(creds.stat().st_mode) == 0o600
        assert json.loads(creds.read_text())["token"].startswith("aics_")

        who = runner.invoke(app, ["whoami", "-o", "json"])
        assert who.exit_code == 0 and json.loads(who.output)["email"] == "eve@x.io"

        assert runner.invoke(app, ["logout"]).exit_code == 0
        assert not creds.exists()
        after = runner.invoke(app, ["whoami"])
        assert after.exit_code == 1 and "not logged in" in after.output


def test_env_overrides_stored_credentials(
    sqlite_ctx: AppContext, cli_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with sqlite_ctx.db.transaction() as s:
        iam.create_user(s, email="eve@x.io", password=PASSWORD)
        token = iam.login(s, email="eve@x.io", password=PASSWORD).token
    with LiveServer(sqlite_ctx) as server:
        monkeypatch.setenv("AICLOUD_URL", server.url)
        monkeypatch.setenv("AICLOUD_TOKEN", token)
        who = CliRunner().invoke(app, ["whoami", "-o", "json"])
        assert who.exit_code == 0, who.output
        monkeypatch.setenv("AICLOUD_TOKEN", "aics_forged")
        bad = CliRunner().invoke(app, ["whoami"])
        assert bad.exit_code == 1 and "request id" in bad.output


def test_wrong_password_and_unreachable_api_are_clear(sqlite_ctx: AppContext,
                                                      cli_env: Path) -> None:
    with LiveServer(sqlite_ctx) as server:
        bad = CliRunner().invoke(app, ["login", "--url", server.url, "--email", "x@y.z",
                                       "--password", "nope"])
    assert bad.exit_code == 1 and "incorrect" in bad.output
    down = CliRunner().invoke(app, ["login", "--url", "http://127.0.0.1:9", "--email", "x@y.z",
                                    "--password", "nope"])
    assert down.exit_code == 1 and "cannot reach the API" in down.output
