"""The IAM commands drive a real API server end to end."""

from __future__ import annotations

import json
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


def test_iam_commands_over_the_api(sqlite_ctx: AppContext, cli_env: Path,
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    with sqlite_ctx.db.transaction() as s:
        iam.bootstrap_admin(s, email="root@x.io", password=PASSWORD)
    runner = CliRunner()

    def run(*args: str, code: int = 0) -> object:
        result = runner.invoke(app, [*args, "-o", "json"] if code == 0 else list(args))
        assert result.exit_code == code, (args, result.output)
        return json.loads(result.output) if code == 0 else result.output

    with LiveServer(sqlite_ctx) as server:
        assert runner.invoke(app, ["login", "--url", server.url, "--email", "root@x.io",
                                   "--password", PASSWORD]).exit_code == 0
        org = run("orgs", "create", "--name", "acme")
        dep = run("departments", "create", "--org", org["id"], "--name", "research")
        dep2 = run("departments", "create", "--org", org["id"], "--name", "ops")
        prj = run("projects", "create", "--department", dep["id"], "--name", "llm")
        direct = run("projects", "create", "--org", org["id"], "--name", "direct")
        assert direct["scope_path"] == f"/{org['id']}/{direct['id']}"
        user = run("users", "create", "--email", "ada@x.io", "--password", PASSWORD)
        grp = run("groups", "create", "--org", org["id"], "--name", "ml")
        run("bindings", "create", "--scope", org["id"], "--principal", user["id"],
            "--role", "project-member")
        run("groups", "add-member", grp["id"], "--user", user["id"])
        assert run("groups", "members", grp["id"])["user_ids"] == [user["id"]]
        role = run("roles", "create", "--org", org["id"], "--name", "gpu-user",
                   "--permission", "gpuaas.instances.*", "--permission", "iam.projects.read")
        assert role["id"] in {r["id"] for r in run("roles", "list")}
        deny = run("deny-bindings", "create", "--scope", dep2["id"], "--principal",
                   user["id"], "--permission", "gpuaas.instances.create")
        assert [d["id"] for d in run("deny-bindings", "list", "--scope", dep2["id"])] == [
            deny["id"]]

        why = run("iam", "explain", "--principal", user["id"], "--permission",
                  "gpuaas.instances.create", "--resource", prj["id"])
        assert why["allowed"] and why["role_id"] == "project-member"
        # PROJECT/TYPE/ID names a resource: it must exist in that project (IAM asks GPUaaS).
        out = run("iam", "explain", "--principal", user["id"], "--permission",
                  "gpuaas.instances.create", "--resource", f"{prj['id']}/instance/inst_x",
                  code=1)
        assert "not found" in str(out)
        moved = run("projects", "move", prj["id"], "--department", dep2["id"])
        assert moved["department_id"] == dep2["id"]
        why = run("iam", "explain", "--principal", user["id"], "--permission",
                  "gpuaas.instances.create", "--resource", prj["id"])
        assert not why["allowed"] and why["deny_binding_id"] == deny["id"]

        listed = run("projects", "list", "--org", org["id"], "--all")
        assert {p["id"] for p in listed} == {prj["id"], direct["id"]}
        assert len(run("projects", "list", "--limit", "1")) == 1

        sa = run("service-accounts", "create", "--project", prj["id"], "--name", "ci")
        key = run("api-keys", "create", "--service-account", sa["id"], "--name", "deploy")
        assert key["secret"].startswith("aick_")
        inv = run("invitations", "create", "--scope", prj["id"], "--email", "bob@x.io",
                  "--role", "project-viewer")
        run("invitations", "accept", "--token", inv["token"], "--password", PASSWORD)

        # Acting with the service account's key: it sees the project, not the org.
        monkeypatch.setenv("AICLOUD_TOKEN", key["secret"])
        assert run("whoami")["id"] == sa["id"]
        assert run("orgs", "list") == []
        missing = run("orgs", "get", org["id"], code=1)
        assert "Not found" in str(missing)
        monkeypatch.delenv("AICLOUD_TOKEN")

        assert run("api-keys", "delete", key["id"])["revoked_at"]
        bad = run("projects", "create", "--org", org["id"], "--department", dep["id"],
                  "--name", "x", code=2)
        assert "exactly one of" in str(bad)
        assert run("deny-bindings", "delete", deny["id"]) == {"ok": True}
        assert runner.invoke(app, ["bindings", "--help"]).exit_code == 0
