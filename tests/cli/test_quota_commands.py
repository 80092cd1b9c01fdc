"""``aicloud quotas`` over the REST API."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from aicloud.cli.main import app
from aicloud.platform import audit, iam
from aicloud.runtime import AppContext
from tests.conftest import LiveServer

PASSWORD = "correct horse battery staple"


def test_set_list_clear(sqlite_ctx: AppContext, tmp_path: Path,
                        monkeypatch: pytest.MonkeyPatch) -> None:
    with sqlite_ctx.db.transaction() as s:
        iam.bootstrap_admin(s, email="root@x.io", password=PASSWORD)
        token = iam.login(s, email="root@x.io", password=PASSWORD).token
        org = iam.create_org(s, name="acme", actor=audit.Actor.system("test"))
    monkeypatch.setenv("AICLOUD_CONFIG_DIR", str(tmp_path))
    monkeypatch.setenv("AICLOUD_TOKEN", token)
    runner = CliRunner()
    with LiveServer(sqlite_ctx) as server:
        monkeypatch.setenv("AICLOUD_URL", server.url)
        made = runner.invoke(app, ["quotas", "set", "--scope", org.id, "--key", "gpu:H100",
                                   "--limit", "8", "-o", "json"])
        assert made.exit_code == 0, made.output
        assert json.loads(made.output)["limit"] == 8
        listed = runner.invoke(app, ["quotas", "list", "--scope", org.id, "-o", "json"])
        assert [q["resource_key"] for q in json.loads(listed.output)] == ["gpu:H100"]
        bad = runner.invoke(app, ["quotas", "set", "--scope", org.id, "--key", "gpu",
                                  "--limit", "-3"])
        assert bad.exit_code == 1 and "limit" in bad.output
        assert runner.invoke(app, ["quotas", "clear", "--scope", org.id,
                                   "--key", "gpu:H100"]).exit_code == 0
        assert json.loads(runner.invoke(app, ["quotas", "list", "--scope", org.id,
                                              "-o", "json"]).output) == []
