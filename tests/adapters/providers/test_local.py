"""The local provider with real processes, real HTTP and a real PTY."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import httpx
import pytest

from aicloud.adapters.providers.base import (
    Capability,
    ComputeProvider,
    ExecSession,
    GpuAssignment,
    ProviderError,
    UnsupportedWorkload,
    WorkloadConflict,
    WorkloadHandle,
    WorkloadKind,
    WorkloadNotFound,
    WorkloadPhase,
    WorkloadSpec,
    capabilities,
)
from aicloud.adapters.providers.local import LocalProvider
from aicloud.adapters.providers.local.procfs import read_stat
from aicloud.runtime.gpuaas import compute_provider
from aicloud.shared.config import load_settings

T = TypeVar("T")
SRC = Path(__file__).resolve().parents[3] / "src"


def eventually(fn: Callable[[], T | None], timeout: float = 10.0) -> T:
    deadline = time.monotonic() + timeout
    while True:
        value = fn()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        time.sleep(0.05)


@pytest.fixture
def provider(tmp_path: Path) -> Iterator[LocalProvider]:
    p = LocalProvider(tmp_path / "workloads")
    yield p
    for handle in p.list_workloads():  # never leave processes behind
        p.stop(handle, grace_seconds=0.5)


def spec(wid: str, kind: WorkloadKind, *indices: int, command: tuple[str, ...] | None = None,
         env: dict[str, str] | None = None) -> WorkloadSpec:
    return WorkloadSpec(wid, kind, GpuAssignment(len(indices), "H100", tuple(indices)),
                        command, env or {})


def run(provider: LocalProvider, s: WorkloadSpec) -> WorkloadHandle:
    handle = provider.create(s)
    assert provider.status(handle).phase is WorkloadPhase.CREATED
    status = provider.start(handle)
    assert status.phase in (WorkloadPhase.RUNNING, WorkloadPhase.EXITED)
    return handle


def all_logs(provider: LocalProvider, handle: WorkloadHandle) -> str:
    return provider.logs(handle, limit=1 << 20).data.decode()


def exited(provider: LocalProvider, handle: WorkloadHandle) -> bool:
    return provider.status(handle).phase is WorkloadPhase.EXITED


def test_it_meets_the_contract_and_its_capabilities(provider: LocalProvider) -> None:
    assert isinstance(provider, ComputeProvider)
    assert capabilities(provider) == {Capability.EXEC, Capability.ENDPOINTS,
                                     Capability.USAGE}
    assert provider.supported_kinds == set(WorkloadKind)


def test_web_app_serves_http_on_its_port_with_its_gpus(provider: LocalProvider) -> None:
    handle = run(provider, spec("web1", WorkloadKind.WEB_APP, 2, 3))
    endpoint = provider.endpoint(handle)
    assert endpoint.host == "127.0.0.1" and endpoint.port > 0

    def fetch() -> httpx.Response | None:
        try:
            return httpx.get(endpoint.url + "/", timeout=2)
        except httpx.TransportError:
            return None

    page = eventually(fetch)
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert "<td>web1</td>" in page.text and "<td>2,3</td>" in page.text
    assert f"listening on 127.0.0.1:{endpoint.port}" in all_logs(provider, handle)
    assert '"GET / HTTP/1.1" 200' in eventually(lambda: all_logs(provider, handle)
                                                if "GET /" in all_logs(provider, handle)
                                                else None)

    t0 = time.monotonic()
    status = provider.stop(handle, grace_seconds=5)
    assert time.monotonic() - t0 < 4  # it honoured SIGTERM; no SIGKILL wait
    assert (status.phase, status.exit_code) == (WorkloadPhase.EXITED, 128 + signal.SIGTERM)
    assert status.detail == "killed by SIGTERM" and status.finished_at is not None
    with pytest.raises(httpx.TransportError):
        httpx.get(endpoint.url + "/", timeout=2)


def test_api_app_serves_json(provider: LocalProvider) -> None:
    handle = run(provider, spec("api1", WorkloadKind.API_APP, 1))
    url = provider.endpoint(handle).url

    def health() -> httpx.Response | None:
        try:
            return httpx.get(url + "/healthz", timeout=2)
        except httpx.TransportError:
            return None

    assert eventually(health).json() == {"status": "ok"}
    assert httpx.get(url + "/v1/info").json() == {"workload": "api1", "gpus": [1]}
    echo = httpx.post(url + "/v1/echo", json={"prompt": "hi", "n": 2})
    assert echo.status_code == 200 and echo.json() == {"echo": {"prompt": "hi", "n": 2}}
    assert httpx.get(url + "/nope").status_code == 404
    # Two serving workloads never get the same port.
    other = run(provider, spec("api2", WorkloadKind.API_APP))
    assert provider.endpoint(other).port != provider.endpoint(handle).port


def test_batch_runs_to_completion_with_its_exit_code_and_a_clean_env(
    provider: LocalProvider, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AICLOUD_SECRET_KEY", "control-plane-secret")
    script = ('echo "gpus=[$CUDA_VISIBLE_DEVICES] id=$WORKLOAD_ID dir=$(pwd) '
              'mine=$MY_VAR secret=[$AICLOUD_SECRET_KEY]"; echo oops >&2; exit 3')
    handle = run(provider, spec("batch1", WorkloadKind.BATCH, 0, 5,
                                command=("sh", "-c", script), env={"MY_VAR": "v"}))
    eventually(lambda: exited(provider, handle))
    status = provider.status(handle)
    assert (status.exit_code, status.detail) == (3, "exited with code 3")
    out = all_logs(provider, handle)
    assert "gpus=[0,5] id=batch1 dir=/workspace mine=v secret=[]\n" in out
    assert "oops\n" in out and out.endswith("[aicloud] exited with code 3\n")

    cpu_only = run(provider, spec("batch2", WorkloadKind.BATCH,
                                  command=("sh", "-c", 'echo "gpus=[$CUDA_VISIBLE_DEVICES]"')))
    eventually(lambda: exited(provider, cpu_only))
    assert "gpus=[]" in all_logs(provider, cpu_only)
    assert provider.status(cpu_only).exit_code == 0

    missing = run(provider, spec("batch3", WorkloadKind.BATCH, command=("no-such-cmd-x",)))
    eventually(lambda: exited(provider, missing))
    assert provider.status(missing).exit_code == 127
    assert "cannot start no-such-cmd-x" in all_logs(provider, missing)


def test_logs_by_offset_and_tail(provider: LocalProvider) -> None:
    handle = run(provider, spec("logs1", WorkloadKind.BATCH,
                                command=("sh", "-c", "for i in $(seq 1 100); do echo $i; done")))
    eventually(lambda: exited(provider, handle))
    whole = provider.logs(handle, limit=1 << 20)
    assert whole.complete and whole.offset == 0 and whole.next_offset == len(whole.data)
    pieces, offset = [], 0
    while True:
        chunk = provider.logs(handle, offset=offset, limit=7)
        pieces.append(chunk.data)
        assert chunk.offset == offset and len(chunk.data) <= 7
        offset = chunk.next_offset
        if chunk.complete:
            break
    assert b"".join(pieces) == whole.data
    tail = provider.logs(handle, tail_lines=3)
    assert tail.data == b"99\n100\n[aicloud] exited with code 0\n"
    assert tail.next_offset == whole.next_offset and tail.complete
    assert provider.logs(handle, offset=10**9).data == b""
    with pytest.raises(ValueError):
        provider.logs(handle, offset=-1)


def test_stop_kills_a_workload_that_ignores_sigterm_after_the_grace(
    provider: LocalProvider,
) -> None:
    stubborn = ("import signal, time\n"
                "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
                "print('ready', flush=True)\n"
                "time.sleep(120)\n")
    handle = run(provider, spec("stubborn", WorkloadKind.BATCH,
                                command=("python3", "-c", stubborn)))
    eventually(lambda: "ready" in all_logs(provider, handle))
    pid = json.loads((provider.root / "stubborn" / "state.json").read_text())["pid"]
    t0 = time.monotonic()
    status = provider.stop(handle, grace_seconds=0.6)
    took = time.monotonic() - t0
    assert 0.6 <= took < 5
    assert (status.phase, status.exit_code) == (WorkloadPhase.EXITED, 128 + signal.SIGKILL)
    assert "still running 0.6s after SIGTERM" in status.detail
    stat = read_stat(pid)
    assert stat is None or stat.zombie
    assert provider.stop(handle, grace_seconds=0.6) == status  # idempotent


def test_a_new_provider_reattaches_after_the_control_plane_restarts(tmp_path: Path) -> None:
    root = tmp_path / "workloads"
    # Another process starts the workload and exits, like a control plane that restarts.
    starter = (
        "import sys\n"
        "from aicloud.adapters.providers.base import WorkloadSpec, WorkloadKind\n"
        "from aicloud.adapters.providers.local import LocalProvider\n"
        "p = LocalProvider(sys.argv[1])\n"
        "print(p.start(p.create(WorkloadSpec('survivor', WorkloadKind.SHELL))).phase.value)\n"
    )
    out = subprocess.run([sys.executable, "-c", starter, str(root)], capture_output=True,
                         text=True, timeout=30, env={**os.environ, "PYTHONPATH": str(SRC)})
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "running"

    fresh = LocalProvider(root)
    (handle,) = fresh.list_workloads()
    assert handle == WorkloadHandle("local", "survivor")
    status = fresh.status(handle)
    assert status.phase is WorkloadPhase.RUNNING and status.started_at is not None
    with fresh.exec(handle, ["sh", "-c", "echo attached-$WORKLOAD_ID"]) as session:
        assert b"attached-survivor" in read_until_eof(session)
    stopped = fresh.stop(handle, grace_seconds=5)
    # The supervisor outlived the restart and recorded the exit itself.
    assert (stopped.exit_code, stopped.detail) == (128 + signal.SIGTERM, "killed by SIGTERM")
    fresh.remove(handle)
    assert fresh.list_workloads() == []


def test_a_recycled_pid_is_not_mistaken_for_the_workload(provider: LocalProvider) -> None:
    handle = provider.create(spec("ghost", WorkloadKind.SHELL))
    # An unrelated process that leads its own group, as a recycled PID would.
    stranger = subprocess.Popen(["sleep", "60"], start_new_session=True)
    try:
        stat = read_stat(stranger.pid)
        assert stat is not None
        state = provider.root / "ghost" / "state.json"
        state.write_text(json.dumps({
            "pid": stranger.pid, "start_ticks": stat.start_ticks + 1,
            "boot_id": Path("/proc/sys/kernel/random/boot_id").read_text().strip(),
            "started_at": "2026-01-01T00:00:00+00:00"}))
        status = provider.status(handle)
        assert (status.phase, status.exit_code) == (WorkloadPhase.EXITED, None)
        provider.stop(handle, grace_seconds=0.2)
        assert stranger.poll() is None  # never signalled
        # Same PID and start time but another boot: also not ours.
        assert not (provider.root / "ghost" / "exit.json").exists()
        state.write_text(json.dumps({"pid": stranger.pid, "start_ticks": stat.start_ticks,
                                     "boot_id": "another-boot"}))
        assert provider.status(handle).phase is WorkloadPhase.EXITED
        state.write_text("{not json")
        assert provider.status(handle).phase is WorkloadPhase.UNKNOWN
        with pytest.raises(ProviderError, match="cannot tell what to stop"):
            provider.stop(handle, grace_seconds=0.2)
        (provider.root / "ghost" / "exit.json").write_text("{}")  # so teardown can stop it
        state.unlink()
    finally:
        stranger.kill()
        stranger.wait()


def read_until_eof(session: ExecSession, timeout: float = 10.0) -> bytes:
    out = b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        chunk = session.read(timeout=0.2)
        if chunk == b"":
            return out
        if chunk:
            out += chunk
    raise AssertionError(f"no EOF within {timeout}s; got {out!r}")


def read_until(session: ExecSession, marker: bytes, timeout: float = 10.0) -> bytes:
    out = b""
    deadline = time.monotonic() + timeout
    while marker not in out:
        if time.monotonic() > deadline:
            raise AssertionError(f"{marker!r} not seen; got {out!r}")
        chunk = session.read(timeout=0.2)
        if chunk == b"":
            raise AssertionError(f"EOF before {marker!r}; got {out!r}")
        out += chunk or b""
    return out


def test_exec_runs_on_a_pty_in_the_workload_env_and_dir(provider: LocalProvider) -> None:
    handle = run(provider, spec("sh1", WorkloadKind.SHELL, 4))
    probe = "echo gpus=$CUDA_VISIBLE_DEVICES; pwd; test -t 0 && echo on-a-terminal"
    with provider.exec(handle, ["sh", "-c", probe], cols=100, rows=30) as session:
        assert isinstance(session, ExecSession)
        out = read_until_eof(session).decode()
        assert session.wait(5) == 0, out
    assert "gpus=4" in out
    assert "/workspace" in out
    # A real terminal, not a pipe (its name is the host's devpts, which the sandbox's /dev
    # does not show, so `tty` cannot name it).
    assert "on-a-terminal" in out

    with provider.exec(handle) as shell:  # the default interactive shell
        shell.resize(120, 40)
        shell.write(b"stty size; echo $((6 * 7))-$WORKLOAD_ID\n")
        out = read_until(shell, b"42-sh1").decode()
        assert "40 120" in out
        shell.write(b"exit 5\n")
        assert shell.wait(5) == 5


def test_stop_hangs_up_open_terminals(provider: LocalProvider) -> None:
    handle = run(provider, spec("sh2", WorkloadKind.SHELL))
    session = provider.exec(handle, ["sh", "-c", "echo in; sleep 60"])
    read_until(session, b"in")
    provider.stop(handle, grace_seconds=2)
    assert session.wait(5) is not None
    session.close()
    with pytest.raises(WorkloadConflict, match="exec needs it running"):
        provider.exec(handle)


def test_bad_specs_and_handles_are_refused_clearly(provider: LocalProvider) -> None:
    cases = [
        (WorkloadSpec("b", WorkloadKind.BATCH), "needs a command"),
        (WorkloadSpec("i", WorkloadKind.SHELL, image="nvcr.io/x"), "not images"),
        (WorkloadSpec("g", WorkloadKind.SHELL, GpuAssignment(2, "H100")), "GPU indices"),
        (WorkloadSpec("e", WorkloadKind.SHELL, env={"PORT": "1"}), "may not set PORT"),
        # The platform's own variables never appear in a workload, not even tenant-made.
        (WorkloadSpec("a", WorkloadKind.SHELL, env={"AICLOUD_SECRET_KEY": "x"}),
         "may not set AICLOUD_SECRET_KEY"),
        (WorkloadSpec("../x", WorkloadKind.SHELL), "workload id"),
    ]
    for bad, message in cases:
        with pytest.raises(UnsupportedWorkload, match=message):
            provider.create(bad)
    with pytest.raises(ValueError, match="indices"):
        GpuAssignment(2, "H100", (0,))

    same = spec("same", WorkloadKind.SHELL, 1)
    handle = provider.create(same)
    assert provider.create(same) == handle  # idempotent
    with pytest.raises(WorkloadConflict, match="different spec"):
        provider.create(spec("same", WorkloadKind.SHELL, 2))
    with pytest.raises(UnsupportedWorkload, match="serves no endpoint"):
        provider.endpoint(handle)
    for unknown in (WorkloadHandle("local", "nope"), WorkloadHandle("slurm", "same"),
                    WorkloadHandle("local", "../etc")):
        with pytest.raises(WorkloadNotFound):
            provider.status(unknown)

    provider.start(handle)
    assert provider.start(handle).phase is WorkloadPhase.RUNNING  # idempotent
    with pytest.raises(WorkloadConflict, match="stop it first"):
        provider.remove(handle)
    never = provider.create(spec("never", WorkloadKind.SHELL))
    assert provider.stop(never, grace_seconds=1).detail == "stopped before it started"
    assert provider.start(never).phase is WorkloadPhase.EXITED  # stays stopped


def test_batch_results_survive_the_default_profiles_relative_root(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The default profile says var/workloads: the supervisor runs elsewhere, so the root
    must be absolute by then (it used to crash writing launched.json, losing the code)."""
    monkeypatch.chdir(tmp_path)
    settings = load_settings("dev")
    assert settings.providers.local_root == str(tmp_path / "var" / "workloads")
    provider = compute_provider(load_settings("dev", providers={"local_root": "var/wl"}))
    assert provider.root == tmp_path / "var" / "wl"
    relative = LocalProvider("var/direct")  # the provider resolves it too
    assert relative.root == tmp_path / "var" / "direct"
    ok = run(relative, spec("ok", WorkloadKind.BATCH, command=("true",)))
    bad = run(provider, spec("bad", WorkloadKind.BATCH,
                             command=("sh", "-c", "echo first line; exit 3")))
    monkeypatch.chdir("/")  # the server's working dir moving on changes nothing
    eventually(lambda: exited(relative, ok) and exited(provider, bad))
    assert (relative.status(ok).exit_code, relative.status(ok).detail) == (
        0, "exited with code 0")
    assert all_logs(relative, ok) == "[aicloud] exited with code 0\n"
    assert (provider.status(bad).exit_code, provider.status(bad).detail) == (
        3, "exited with code 3")
    assert all_logs(provider, bad) == "first line\n[aicloud] exited with code 3\n"
