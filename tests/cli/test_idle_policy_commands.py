"""``aicloud idle-policy`` over the REST API."""

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


def test_set_show_delete(sqlite_ctx: AppContext, tmp_path: Path,
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
        made = runner.invoke(app, ["idle-policy", "set", "--scope", org.id, "--below", "5",
                                   "--for", "30m", "--delete-after", "7d", "-o", "json"])
        assert made.exit_code == 0, made.output
        got = json.loads(made.output)
        assert (got["instance_type"], got["threshold_pct"], got["idle_minutes"],
                got["warn_minutes"], got["delete_after_days"]) == ("*", 5, 30, 5, 7)
        typed = runner.invoke(app, ["idle-policy", "set", "--scope", org.id, "--type",
                                    "gpu.h100.8x", "--below", "10", "--for", "2h",
                                    "--warn", "15m", "-o", "json"])
        assert json.loads(typed.output)["idle_minutes"] == 120, typed.output
        shown = json.loads(runner.invoke(app, ["idle-policy", "show", "--scope", org.id,
                                               "-o", "json"]).output)
        assert sorted(p["instance_type"] for p in shown) == ["*", "gpu.h100.8x"]
        # Refused before or by the API, with the reason.
        bad = runner.invoke(app, ["idle-policy", "set", "--scope", org.id, "--below", "5",
                                  "--for", "soon"])
        assert bad.exit_code != 0 and "30m" in bad.output
        short = runner.invoke(app, ["idle-policy", "set", "--scope", org.id, "--below", "5",
                                    "--for", "10m", "--warn", "10m"])
        assert short.exit_code == 1 and "warn_minutes" in short.output, short.output
        assert runner.invoke(app, ["idle-policy", "delete", "--scope", org.id, "--type",
                                   "gpu.h100.8x"]).exit_code == 0
        assert [p["instance_type"] for p in json.loads(runner.invoke(
            app, ["idle-policy", "show", "--scope", org.id, "-o", "json"]).output)] == ["*"]
