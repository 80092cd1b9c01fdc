"""Operator commands, run as real processes: they work with the API down."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import free_port

AICLOUD = [sys.executable, "-m", "aicloud.cli"]


def run(args: list[str], env: dict[str, str], **kw) -> subprocess.CompletedProcess[str]:  # type: ignore[no-untyped-def]
    return subprocess.run([*AICLOUD, *args], env=env, capture_output=True, text=True,
                          timeout=120, **kw)


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    e = {k: v for k, v in os.environ.items() if not k.startswith("AICLOUD_")}
    e["AICLOUD_DATABASE_URL"] = f"sqlite:///{tmp_path / 'cli.db'}"
    e["AICLOUD_CONFIG_DIR"] = str(tmp_path / "config")
    e["COLUMNS"] = "200"
    return e


def _all_command_paths(command) -> list[list[str]]:  # type: ignore[no-untyped-def]
    paths: list[list[str]] = [[]]

    def walk(group, prefix: list[str]) -> None:  # type: ignore[no-untyped-def]
        for name, cmd in getattr(group, "commands", {}).items():
            paths.append([*prefix, name])
            walk(cmd, [*prefix, name])

    walk(command, [])
    return paths


def test_every_command_has_help() -> None:
    import typer.main
    from click.testing import CliRunner

    from aicloud.cli.main import app

    # The click command tree built once, as the `aicloud` process builds it (typer's runner
    # would rebuild the whole tree for each of the ~130 invocations).
    command = typer.main.get_command(app)
    paths = _all_command_paths(command)
    assert len(paths) > 12
    for path in paths:
        result = CliRunner().invoke(command, [*path, "--help"])
        assert result.exit_code == 0, (path, result.output)
        assert "Usage" in result.output


def test_help_runs_as_a_real_process(env: dict[str, str]) -> None:
    for args in (["--help"], ["serve", "--help"], ["api", "--help"], ["worker", "--help"],
                 ):
        result = run(args, env)
        assert result.returncode == 0, (args, result.stderr)
        assert "Usage" in result.stdout


def test_db_upgrade_current_and_bootstrap(env: dict[str, str]) -> None:
    cur = json.loads(run(["db", "current", "-o", "json"], env).stdout)
    assert cur["current"] == [] and not cur["up_to_date"]
    assert run(["admin", "bootstrap", "--email", "ops@x.io"], env).returncode == 2  # not migrated
    assert run(["db", "upgrade"], env).returncode == 0
    assert "already at" in run(["db", "upgrade"], env).stdout  # idempotent
    assert json.loads(run(["db", "current", "-o", "json"], env).stdout)["up_to_date"]

    made = run(["admin", "bootstrap", "--email", "ops@x.io", "-o", "json"], env)
    assert made.returncode == 0, made.stderr
    data = json.loads(made.stdout)
    assert data["created"] and len(data["password"]) >= 20
    again = run(["admin", "bootstrap", "--email", "ops@x.io"], env)
    assert again.returncode == 1 and "already exists" in again.stderr
    short = run(["admin", "bootstrap", "--email", "b@x.io", "--password", "short"], env)
    assert short.returncode == 1 and "at least 12" in short.stderr


def test_config_show_masks_secrets(env: dict[str, str]) -> None:
    env = {**env, "AICLOUD_SECRET_KEY": "very-secret-value-0123456789abcdef"}
    out = run(["config", "show", "-o", "json", "--profile", "demo"], env)
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert data["profile"] == "demo" and data["secret_key"] == "********"
    assert "very-secret" not in out.stdout


def test_strict_profile_refuses_to_start_listing_every_problem(env: dict[str, str]) -> None:
    env = {**env, "AICLOUD_BOOTSTRAP_ADMIN_ENABLED": "true", "AICLOUD_COOKIE_SECURE": "false"}
    for command in ("serve", "api", "worker"):
        result = run([command, "--profile", "prod"], env)
        assert result.returncode == 2, result.stderr
        err = " ".join(result.stderr.split())
        for needle in ("SQLite", "secret_key", "bootstrap_admin_enabled", "cookie_secure"):
            assert needle in err, (command, err)


def test_invalid_config_values_exit_2(env: dict[str, str]) -> None:
    result = run(["config", "show"], {**env, "AICLOUD_PORT": "eighty"})
    assert result.returncode == 2 and "port" in result.stderr


def test_serve_migrates_bootstraps_once_serves_and_stops_on_ctrl_c(
    env: dict[str, str], tmp_path: Path
) -> None:
    port = free_port()

    def start() -> subprocess.Popen[str]:
        return subprocess.Popen([*AICLOUD, "serve", "--port", str(port)], env=env, cwd=tmp_path,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    def wait_ready() -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/readyz").status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise AssertionError("serve did not become ready")

    proc = start()
    try:
        wait_ready()
        login = httpx.post(f"http://127.0.0.1:{port}/auth/login",
                           json={"email": "admin@aicloud.local", "password": "wrong"})
        assert login.status_code == 401
    finally:
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, out
    assert "bootstrap admin created" in out and "password:" in out
    assert "Traceback" not in out
    assert "Application shutdown complete" in out

    proc = start()  # a second start reuses what is there and prints no credentials
    try:
        wait_ready()
    finally:
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0 and "bootstrap admin created" not in out


def test_worker_runs_controllers_and_stops_on_sigterm(env: dict[str, str], tmp_path: Path,
                                                     _sqlite_template: Path) -> None:
    shutil.copy(_sqlite_template, tmp_path / "cli.db")  # migrated (`db upgrade` is tested above)
    proc = subprocess.Popen([*AICLOUD, "worker"], env={**env, "PYTHONUNBUFFERED": "1"},
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    # Signal only once the worker says it runs (its handlers are installed by then): a fixed
    # sleep raced the interpreter's start-up on a loaded machine.
    seen = []
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        line = proc.stdout.readline() if proc.stdout else ""
        seen.append(line)
        if "worker running" in line or not line:
            break
    proc.send_signal(signal.SIGTERM)
    rest, _ = proc.communicate(timeout=30)
    out = "".join(seen) + rest
    assert proc.returncode == 0, out
    assert "idempotency-gc" in out
