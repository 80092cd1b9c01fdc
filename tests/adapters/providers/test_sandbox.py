"""The local provider's sandbox, tested from inside: real sandboxed workloads probe what they
can see and reach, and report it in their log, over their own HTTP port, and on a terminal.

The test process plays the platform: it holds a secret in its environment, owns a database
file next to the workloads' root, listens on an "internal" port on every address, and
PostgreSQL listens on 127.0.0.1:5432 (checked reachable from here, so that "unreachable from
inside" means something).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from aicloud.adapters.providers.base import (
    GpuAssignment,
    ProviderError,
    WorkloadHandle,
    WorkloadKind,
    WorkloadPhase,
    WorkloadSpec,
)
from aicloud.adapters.providers.local import LocalProvider
from aicloud.adapters.providers.local.procfs import read_stat
from aicloud.runtime.gpuaas import compute_provider
from aicloud.shared.config import ConfigError, load_settings
from tests.adapters.providers.test_local import eventually, read_until_eof

REPO = Path(__file__).resolve().parents[3]

# Runs inside the sandbox (python3 of /usr). argv: a JSON object of host facts to probe.
PROBE = r'''
import json, os, socket, sys
facts = json.loads(sys.argv[1])
found = {"uid": os.getuid(), "gid": os.getgid(), "cwd": os.getcwd(),
         "home": os.environ.get("HOME"), "env": sorted(os.environ)}

def can_read(path):
    try:
        with open(path, "rb") as f:
            f.read(1)
        return True
    except OSError:
        return False

def can_write(path):
    try:
        with open(path, "w") as f:
            f.write("x")
        return True
    except OSError:
        return False

def can_connect(host, port):
    s = socket.socket()
    s.settimeout(1)
    try:
        s.connect((host, port))
        return True
    except OSError:
        return False
    finally:
        s.close()

pids = [p for p in os.listdir("/proc") if p.isdigit()]
found["pids"] = sorted(int(p) for p in pids)
cmdlines = []
for p in pids:
    try:
        with open(f"/proc/{p}/cmdline", "rb") as f:
            cmdlines.append(f.read().replace(b"\0", b" ").decode())
    except OSError:
        pass
found["cmdlines"] = cmdlines
found["server_environ_readable"] = can_read(f"/proc/{facts['server_pid']}/environ")
found["server_proc_exists"] = os.path.exists(f"/proc/{facts['server_pid']}")
found["seen_paths"] = [p for p in facts["hidden_paths"] if os.path.lexists(p)]
found["readable_paths"] = [p for p in facts["hidden_paths"] if can_read(p)]
found["writable"] = [p for p in facts["write_targets"] if can_write(p)]
found["workspace_writable"] = can_write("/workspace/findings.json")
found["connects"] = [f"{h}:{p}" for h, p in facts["endpoints"] if can_connect(h, p)]
found["interfaces"] = sorted(name for _, name in socket.if_nameindex())
print("FINDINGS " + json.dumps(found), flush=True)
with open("/workspace/findings.json", "w") as f:
    json.dump(found, f)
if os.environ.get("PORT"):
    from http.server import BaseHTTPRequestHandler, HTTPServer
    body = json.dumps(found).encode()
    class H(BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
    HTTPServer(("127.0.0.1", int(os.environ["PORT"])), H).serve_forever()
'''


def host_addresses() -> list[str]:
    out = subprocess.run(["ip", "-4", "-o", "addr", "show"], capture_output=True, text=True)
    addrs = [line.split()[3].split("/")[0] for line in out.stdout.splitlines()]
    return sorted(set(addrs) | {"127.0.0.1"})


@pytest.fixture
def platform(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Any]]:
    """A stand-in control plane: a secret in its env, a database file and an internal port."""
    monkeypatch.setenv("AICLOUD_SECRET_KEY", "control-plane-secret-xyz")
    monkeypatch.setenv("AICLOUD_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/prod")
    var = tmp_path / "var"
    var.mkdir()
    db_file = var / "aicloud.db"
    db_file.write_text("tenant rows")
    db_file.chmod(0o644)  # readable by anyone who can reach it: only the sandbox hides it
    internal = socket.create_server(("0.0.0.0", 0))
    internal.listen()
    port = internal.getsockname()[1]
    stop = threading.Event()

    def serve() -> None:
        internal.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = internal.accept()
                conn.close()
            except OSError:
                pass

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    # The platform side reaches both: the negative results below are the sandbox's doing.
    for host in ("127.0.0.1", *host_addresses()):
        socket.create_connection((host, port), timeout=2).close()
    socket.create_connection(("127.0.0.1", 5432), timeout=2).close()
    provider = LocalProvider(var / "workloads")
    yield {"provider": provider, "var": var, "db_file": db_file, "internal_port": port}
    for handle in provider.list_workloads():
        provider.stop(handle, grace_seconds=0.5)
    stop.set()
    thread.join()
    internal.close()


def facts(platform: dict[str, Any], neighbour_work: Path) -> dict[str, Any]:
    root: Path = platform["provider"].root
    return {
        "server_pid": os.getpid(),
        "hidden_paths": [str(platform["db_file"]), str(platform["var"]), str(root),
                         str(REPO / "pyproject.toml"), str(REPO / "src"),
                         str(neighbour_work), str(neighbour_work / "secret.txt"),
                         "/proc/1/root/etc/hostname", "/etc/shadow"],
        "write_targets": ["/probe", "/usr/probe", "/etc/probe", "/opt/aicloud/apps/probe",
                          str(platform["var"] / "probe"), str(neighbour_work / "probe"),
                          "/proc/sys/kernel/hostname"],
        "endpoints": [[h, 5432] for h in host_addresses()]
                     + [[h, platform["internal_port"]] for h in host_addresses()],
    }


def _up(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200
    except httpx.TransportError:
        return False


def findings(log: str) -> dict[str, Any]:
    line = next(x for x in log.splitlines() if x.startswith("FINDINGS "))
    return json.loads(line.removeprefix("FINDINGS "))  # type: ignore[no-any-return]


def assert_confined(found: dict[str, Any], provider: LocalProvider) -> None:
    assert found["uid"] not in (0, os.getuid()) and found["uid"] >= provider.uid_base
    assert found["gid"] not in (0, os.getgid())
    assert (found["cwd"], found["home"]) == ("/workspace", "/workspace")
    assert not [k for k in found["env"] if k.startswith("AICLOUD")], found["env"]
    # Only what the workload needs (plus the interpreter's own LC_CTYPE coercion).
    assert set(found["env"]) <= {"PATH", "HOME", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "PORT",
                                 "CUDA_VISIBLE_DEVICES", "WORKLOAD_ID", "WORKLOAD_KIND",
                                 "PYTHONUNBUFFERED", "TERM", "MY_VAR", "PWD", "SHLVL", "_"}
    # Its own PID namespace: a handful of its own processes, none of the platform's.
    assert max(found["pids"]) < 50, found["pids"]
    strangers = [c for c in found["cmdlines"]
                 if not c.startswith(("/usr/bin/bwrap ", "/usr/bin/python3 ", "python3 "))]
    assert strangers == [], strangers
    # The sandbox's init (bwrap) shows no host path: its options came through a descriptor.
    bwrap_options = [c.split(" -- ")[0] for c in found["cmdlines"]
                     if c.startswith("/usr/bin/bwrap ")]
    assert bwrap_options and not [o for o in bwrap_options if str(provider.root) in o]
    assert not found["server_environ_readable"] and not found["server_proc_exists"]
    assert found["seen_paths"] == [] and found["readable_paths"] == []
    assert found["writable"] == [] and found["workspace_writable"]
    assert found["connects"] == [], found["connects"]
    assert "lo" in found["interfaces"]


def test_a_batch_workload_is_confined_as_it_reports_from_inside(
    platform: dict[str, Any],
) -> None:
    provider: LocalProvider = platform["provider"]
    assert provider.sandbox == "bwrap"
    neighbour = provider.create(WorkloadSpec("neighbour", WorkloadKind.SHELL))
    provider.start(neighbour)
    neighbour_work = provider.root / "neighbour" / "work"
    (neighbour_work / "secret.txt").write_text("the neighbour's data")

    # Another tenant's app: the platform reaches it, the probe must not.
    app = provider.create(WorkloadSpec("app", WorkloadKind.API_APP))
    provider.start(app)
    app_port = provider.endpoint(app).port
    eventually(lambda: _up(app_port))
    probe_facts = facts(platform, neighbour_work)
    probe_facts["endpoints"].append(["127.0.0.1", app_port])
    probe = provider.create(WorkloadSpec(
        "probe", WorkloadKind.BATCH, GpuAssignment(1, "H100", (0,)),
        command=("python3", "-c", PROBE, json.dumps(probe_facts)),
        env={"MY_VAR": "mine"}))
    provider.start(probe)
    eventually(lambda: provider.status(probe).phase is WorkloadPhase.EXITED)
    status = provider.status(probe)
    log = provider.logs(probe, limit=1 << 20).data.decode()
    assert status.exit_code == 0, log
    found = findings(log)
    assert_confined(found, provider)
    # What it wrote landed in its work dir, owned by its uid; the neighbour's got nothing.
    written = provider.root / "probe" / "work" / "findings.json"
    assert json.loads(written.read_text())["uid"] == found["uid"]
    assert written.stat().st_uid == found["uid"]
    assert not (neighbour_work / "probe").exists()
    assert not (platform["var"] / "probe").exists()
    # Two workloads never share a uid.
    with provider.exec(neighbour, ["id", "-u"]) as session:
        assert int(read_until_eof(session).split()[-1]) not in (found["uid"], 0)
    # The server's files about the workload are closed to it, even by name on the host.
    for name in ("output.log", "meta.json", "state.json", "exit.json"):
        mode = (provider.root / "probe" / name).stat()
        assert mode.st_uid == os.getuid()
    assert (provider.root / "probe" / "output.log").stat().st_mode & 0o077 == 0


def test_a_serving_workload_is_reachable_from_the_platform_and_reaches_nothing(
    platform: dict[str, Any],
) -> None:
    provider: LocalProvider = platform["provider"]
    other = provider.create(WorkloadSpec("other", WorkloadKind.SHELL))
    provider.start(other)
    handle = provider.create(WorkloadSpec(
        "served", WorkloadKind.WEB_APP,
        command=("python3", "-c", PROBE,
                 json.dumps(facts(platform, provider.root / "other" / "work")))))
    provider.start(handle)
    url = provider.endpoint(handle).url

    def fetch() -> httpx.Response | None:
        try:
            return httpx.get(url, timeout=2)
        except httpx.TransportError:
            return None

    found = eventually(fetch).json()  # the platform side reaches its $PORT
    assert_confined(found, provider)
    # pasta forwards only that port, on the host's loopback only.
    for host in host_addresses():
        if host != "127.0.0.1":
            with pytest.raises(OSError):
                socket.create_connection((host, provider.endpoint(handle).port), timeout=1)


def test_the_terminal_enters_the_same_sandbox(platform: dict[str, Any]) -> None:
    provider: LocalProvider = platform["provider"]
    handle = provider.create(WorkloadSpec("term", WorkloadKind.SHELL))
    provider.start(handle)
    other = provider.create(WorkloadSpec("other2", WorkloadKind.SHELL))
    provider.start(other)
    with provider.exec(handle, ["python3", "-c", PROBE,
                                json.dumps(facts(platform,
                                                 provider.root / "other2" / "work"))]) as s:
        out = read_until_eof(s).decode()
    found = findings(out.replace("\r\n", "\n"))
    assert_confined(found, provider)
    # The same uid as the workload it entered, and it sees that workload's processes.
    with provider.exec(handle, ["sh", "-c", "id -u; cat /proc/1/cmdline | tr '\\0' ' '"]) as s:
        uid_line, *rest = read_until_eof(s).decode().split()
    assert int(uid_line) == found["uid"]
    assert "bwrap" in " ".join(rest)


def test_strict_profiles_refuse_an_unsandboxed_or_missing_sandbox(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(ProviderError, match="strict profiles run workloads only in the bwrap"):
        LocalProvider(tmp_path / "a", sandbox="none", strict=True)
    settings = load_settings("staging", providers={"local_sandbox": "none"})
    assert any("local_sandbox is 'none'" in p for p in settings.safety_problems())
    assert not any("local_sandbox" in p for p in load_settings("staging").safety_problems())
    # A host without bwrap (a PATH that lacks it): the agent's provider refuses to start.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("pasta", "setpriv", "nsenter", "python3"):
        (bin_dir / tool).symlink_to(subprocess.check_output(["which", tool], text=True).strip())
    code = ("from aicloud.runtime.gpuaas import compute_provider\n"
            "from aicloud.shared.config import load_settings, ConfigError\n"
            "import sys\n"
            f"settings = load_settings('staging', providers={{'local_root': "
            f"{str(tmp_path / 'wl')!r}}})\n"
            "# The API's log reader starts nothing: it needs no sandbox.\n"
            "print(type(compute_provider(settings, runs_workloads=False)).__name__)\n"
            "try:\n"
            "    compute_provider(settings)\n"
            "except ConfigError as e:\n"
            "    print(e); sys.exit(3)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env={**os.environ, "PATH": str(bin_dir)}, timeout=60)
    assert out.returncode == 3, out.stderr
    assert "profile 'staging' refuses to start" in out.stdout
    assert "missing bwrap" in out.stdout
    assert out.stdout.startswith("LocalProvider\n")


def test_none_is_loud_and_auto_falls_back_only_where_allowed(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level("WARNING"):
        p = LocalProvider(tmp_path / "plain", sandbox="none")
    assert p.sandbox == "none"
    assert "UNSANDBOXED WORKLOADS" in caplog.text
    closed = tmp_path / "closed"
    closed.mkdir(mode=0o700)
    closed.chmod(0o700)
    with pytest.raises(ProviderError, match="closed to other users"):
        LocalProvider(closed / "wl", sandbox="bwrap")
    with caplog.at_level("WARNING"):
        assert LocalProvider(closed / "wl2", sandbox="auto").sandbox == "none"
    with pytest.raises(ConfigError, match="closed to other users"):
        compute_provider(load_settings("prod", providers={"local_root": str(closed / "w")}))


def test_a_workload_made_before_sandboxing_is_still_handled(tmp_path: Path) -> None:
    """Re-attach across the upgrade: a workload whose meta has no sandbox record ran as a
    plain process group; the new provider still stops it the old way."""
    old = LocalProvider(tmp_path / "wl", sandbox="none")
    handle = old.create(WorkloadSpec("legacy", WorkloadKind.SHELL))
    meta_path = old.root / "legacy" / "meta.json"
    meta = json.loads(meta_path.read_text())
    del meta["sandbox"]
    meta_path.write_text(json.dumps(meta))
    old.start(handle)
    fresh = LocalProvider(tmp_path / "wl")
    assert fresh.sandbox == "bwrap"
    assert fresh.status(handle).phase is WorkloadPhase.RUNNING
    stopped = fresh.stop(WorkloadHandle("local", "legacy"), grace_seconds=3)
    assert stopped.detail == "killed by SIGTERM"


def test_the_server_never_reads_a_log_through_a_planted_link(tmp_path: Path) -> None:
    """An unsandboxed workload runs as the server's user: it could swap its log for a link
    to a file it may not read through the API (here: another instance's log)."""
    provider = LocalProvider(tmp_path / "wl", sandbox="none")
    victim = provider.create(WorkloadSpec("victim", WorkloadKind.BATCH,
                                          command=("sh", "-c", "echo victim-secret")))
    provider.start(victim)
    eventually(lambda: provider.status(victim).phase is WorkloadPhase.EXITED)
    attacker = provider.create(WorkloadSpec(
        "attacker", WorkloadKind.BATCH,
        command=("sh", "-c", "rm ../output.log; ln -s ../victim/output.log ../output.log")))
    provider.start(attacker)
    eventually(lambda: provider.status(attacker).phase is WorkloadPhase.EXITED)
    assert (provider.root / "attacker" / "output.log").is_symlink()
    with pytest.raises(ProviderError, match="not a file"):
        provider.logs(attacker)


def uid_processes(uid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if entry.stat().st_uid == uid:
                    found.append(int(entry.name))
            except OSError:
                pass
    return found


def test_nothing_a_workload_started_outlives_it(tmp_path: Path) -> None:
    """A daemon that leaves the process group (setsid) dies with the workload's main
    process: the PID namespace ends with its init."""
    provider = LocalProvider(tmp_path / "wl")
    handle = provider.create(WorkloadSpec(
        "escape", WorkloadKind.BATCH,
        command=("sh", "-c", "setsid sleep 300 </dev/null >/dev/null 2>&1 & sleep 0.3; exit 0")))
    uid = json.loads((provider.root / "escape" / "meta.json").read_text())["sandbox"]["uid"]
    provider.start(handle)
    eventually(lambda: provider.status(handle).phase is WorkloadPhase.EXITED)
    assert provider.status(handle).exit_code == 0
    eventually(lambda: not uid_processes(uid))
    provider.remove(handle)
    assert not (provider.root / "escape").exists()


def test_a_killed_supervisor_leaves_a_stoppable_sandbox(tmp_path: Path) -> None:
    """SIGKILL the supervisor between steps: the workload keeps running and is reported so,
    a terminal still enters it, and stop still ends it gracefully (SIGTERM first)."""
    provider = LocalProvider(tmp_path / "wl")
    handle = provider.create(WorkloadSpec(
        "orphan", WorkloadKind.BATCH,
        command=("python3", "-c", "import signal, sys, time\n"
                 "signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))\n"
                 "print('ready', flush=True)\ntime.sleep(300)\n")))
    provider.start(handle)
    eventually(lambda: b"ready" in provider.logs(handle).data)
    supervisor = json.loads((provider.root / "orphan" / "state.json").read_text())["pid"]
    os.kill(supervisor, signal.SIGKILL)
    eventually(lambda: (read_stat(supervisor) is None) or read_stat(supervisor).zombie)
    provider.status(handle)  # reaps our child
    assert provider.status(handle).phase is WorkloadPhase.RUNNING
    with provider.exec(handle, ["sh", "-c", "echo inside-$WORKLOAD_ID"]) as session:
        assert b"inside-orphan" in read_until_eof(session)
    t0 = time.monotonic()
    stopped = provider.stop(handle, grace_seconds=10)
    assert time.monotonic() - t0 < 5  # it took the SIGTERM; no SIGKILL after the grace
    assert stopped.phase is WorkloadPhase.EXITED
