"""The local provider: each workload is a process group on this host.

Layout of one workload, under ``root/<workload id>/``:

- ``meta.json``   the spec and the allocated port (written by create)
- ``state.json``  pid, start time (clock ticks since boot) and boot id of the supervisor
                  that leads the process group (written by start)
- ``launched.json`` written by the supervisor once the command runs
- ``exit.json``   how it ended (written by the supervisor, or by stop after a SIGKILL)
- ``output.log``  stdout and stderr, interleaved (0600, the server's: the workload only holds
                  a write descriptor)
- ``work/``       the working directory and $HOME (``/workspace`` in the sandbox), owned by
                  the workload's uid; the only place it can write
- ``passwd``, ``group``  the sandbox's identity files
- ``execs/``      one record per interactive session, so stop can end them too

Everything needed to answer status/logs/stop lives in these files, so a new provider
instance (after a control-plane restart) re-attaches to running workloads; the recorded start
time and boot id guard against a recycled PID. The workload dir itself is 0700 and the
server's: the workload never sees it, so nothing the server reads there (state, log) can be
replaced by a workload's symlink.

Every workload runs in the bubblewrap sandbox described in sandbox.py (its own uid, PID,
mount, network namespaces, a clean environment). ``sandbox="none"`` runs it as a plain
process group of the server's user, with the server's view of the host: only for a trusted
laptop, refused in strict profiles, and announced loudly. ``"auto"`` picks bwrap when the
host can run it and says so when it falls back.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import re
import shutil
import signal
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from aicloud.adapters.providers.base import (
    SERVING_KINDS,
    Endpoint,
    GpuAssignment,
    LogChunk,
    ProviderError,
    UnsupportedWorkload,
    WorkloadConflict,
    WorkloadHandle,
    WorkloadKind,
    WorkloadNotFound,
    WorkloadPhase,
    WorkloadSpec,
    WorkloadStatus,
    WorkloadUsage,
)
from aicloud.adapters.providers.local import procfs
from aicloud.adapters.providers.local.sandbox import (
    WORKSPACE,
    Bubblewrap,
    closed_ancestors,
    host_problems,
    sandbox_main,
    sandbox_python,
)
from aicloud.adapters.providers.local.terminal import PtySession

log = logging.getLogger(__name__)

HERE = Path(__file__).resolve().parent
SUPERVISOR = HERE / "supervisor.py"
APPS = HERE / "apps"
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
# Inherited from the control plane's environment; nothing else is (no secrets leak).
_INHERITED_ENV = ("PATH", "LANG", "LC_ALL", "TZ")
_RESERVED_ENV = frozenset({"CUDA_VISIBLE_DEVICES", "PORT", "WORKLOAD_ID", "WORKLOAD_KIND",
                           "HOME"})
SANDBOXES = ("bwrap", "none", "auto")
DEFAULT_UID_BASE = 2_000_000_000
_UID_SPAN = 1_000_000
_TEMPLATE_SCRIPTS = {WorkloadKind.WEB_APP: "web_app.py", WorkloadKind.API_APP: "api_app.py"}
_announced: set[tuple[str, str]] = set()


def _announce(root: Path, message: str) -> None:
    """Log a sandbox warning once per process and root (the API builds providers often)."""
    if (str(root), message) not in _announced:
        _announced.add((str(root), message))
        log.warning("%s", message)
_POLL = 0.05
_LAUNCH_TIMEOUT = 10.0


def _template(kind: WorkloadKind, bwrap: Bubblewrap | None) -> tuple[str, ...]:
    # The demos are stdlib-only: the host's python3 runs them in the sandbox, the server's
    # interpreter outside.
    py = bwrap.python if bwrap else sys.executable
    if kind is WorkloadKind.SHELL:
        return (py, "-c", "import signal\nwhile True: signal.pause()")
    script = _TEMPLATE_SCRIPTS[kind]
    return bwrap.template(script) if bwrap else (py, str(APPS / script))


def _write_json(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2))
    os.replace(tmp, path)


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: not a JSON object")
    return data


def _spec_to_json(spec: WorkloadSpec) -> dict[str, Any]:
    data = asdict(spec)
    data["kind"] = spec.kind.value
    data["env"] = dict(spec.env)
    # Round-trip so it compares equal to what was stored (tuples become lists).
    return json.loads(json.dumps(data))  # type: ignore[no-any-return]


def _spec_from_json(data: dict[str, Any]) -> WorkloadSpec:
    gpus = data["gpus"]
    return WorkloadSpec(
        workload_id=data["workload_id"],
        kind=WorkloadKind(data["kind"]),
        gpus=GpuAssignment(gpus["count"], gpus["model"],
                           None if gpus["indices"] is None else tuple(gpus["indices"])),
        command=None if data["command"] is None else tuple(data["command"]),
        env=data["env"],
        image=data["image"],
    )


def _free_port(taken: set[int]) -> int:
    for _ in range(50):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port not in taken:
            return int(port)
    raise ProviderError("no free local port found")


def _time(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


class LocalProvider:
    """Runs workloads as process groups under ``root``. One instance per host."""

    name = "local"
    supported_kinds = frozenset(WorkloadKind)

    def __init__(self, root: Path | str, *, endpoint_host: str = "127.0.0.1",
                 sandbox: str = "bwrap", uid_base: int = DEFAULT_UID_BASE,
                 strict: bool = False, runs_workloads: bool = True):
        """``runs_workloads=False``: a reader (the API reading logs), which never starts
        anything, so it neither needs nor checks the sandbox on this host."""
        # Absolute once, here: the supervisor runs in another directory, so a relative root
        # (the default profile's var/workloads) would point elsewhere from there.
        self.root = Path(root).resolve()
        self.endpoint_host = endpoint_host
        self.uid_base = uid_base
        self._bwrap = Bubblewrap(sandbox_python() or "python3", APPS)
        # Our own children, reaped when seen so they do not linger as zombies. A re-attached
        # provider has none and relies on the files alone.
        self._children: dict[str, subprocess.Popen[bytes]] = {}
        if not runs_workloads:
            self.sandbox = self._choose_sandbox(sandbox, strict, check_host=False)
            return
        self.root.mkdir(parents=True, exist_ok=True)
        self.sandbox = self._choose_sandbox(sandbox, strict)
        if self.sandbox == "bwrap":
            self.root.chmod(0o711)  # workload uids may not list it

    def _choose_sandbox(self, wanted: str, strict: bool, check_host: bool = True) -> str:
        if wanted not in SANDBOXES:
            raise ValueError(f"sandbox {wanted!r}: choose one of {', '.join(SANDBOXES)}")
        if strict and wanted != "bwrap":
            raise ProviderError(f"sandbox {wanted!r} refused: strict profiles run workloads "
                                "only in the bwrap sandbox (providers.local_sandbox: bwrap)")
        if not check_host:
            return "none" if wanted == "none" else "bwrap"
        problems = [*host_problems(), *(
            f"{d} is closed to other users: bwrap, as the workload's uid, must pass through it "
            "to mount the workload's dir (chmod o+x, or choose another providers.local_root)"
            for d in closed_ancestors(self.root))] if wanted != "none" else []
        if wanted == "bwrap" and problems:
            raise ProviderError("the bwrap sandbox cannot run on this host, so no workload "
                                "may start: " + "; ".join(problems))
        if wanted == "none" or problems:
            why = "configured" if wanted == "none" else "; ".join(problems)
            _announce(self.root, f"UNSANDBOXED WORKLOADS ({why}): workloads under {self.root} "
                      "run as this server's user and can read its environment, files and "
                      "database; never use this for anyone but yourself")
            return "none"
        return "bwrap"

    # --- files ----------------------------------------------------------------------------

    def _dir(self, handle: WorkloadHandle) -> Path:
        if handle.provider != self.name:
            raise WorkloadNotFound(f"handle of provider {handle.provider!r}, not {self.name!r}")
        if not _ID.match(handle.ref):
            raise WorkloadNotFound(f"malformed local workload ref {handle.ref!r}")
        path = self.root / handle.ref
        if not (path / "meta.json").is_file():
            raise WorkloadNotFound(f"no local workload {handle.ref!r}")
        return path

    def _meta(self, path: Path) -> dict[str, Any]:
        meta = _read_json(path / "meta.json")
        assert meta is not None  # _dir checked it
        return meta

    def _handle(self, workload_id: str) -> WorkloadHandle:
        return WorkloadHandle(self.name, workload_id)

    # --- create / start -------------------------------------------------------------------

    def _validate(self, spec: WorkloadSpec) -> None:
        if not _ID.match(spec.workload_id):
            raise UnsupportedWorkload(
                f"workload id {spec.workload_id!r}: use letters, digits, '_', '-', '.'")
        if spec.image is not None:
            raise UnsupportedWorkload("the local provider runs built-in templates, not images")
        if spec.kind is WorkloadKind.BATCH and not spec.command:
            raise UnsupportedWorkload("a batch workload needs a command")
        if spec.gpus.count and spec.gpus.indices is None:
            raise UnsupportedWorkload(
                "the local provider needs the GPU indices chosen by placement")
        reserved = sorted((_RESERVED_ENV & set(spec.env))
                          | {k for k in spec.env if k.upper().startswith("AICLOUD_")})
        if reserved:
            raise UnsupportedWorkload(f"env may not set {', '.join(reserved)}: "
                                      "the provider sets them")

    def create(self, spec: WorkloadSpec) -> WorkloadHandle:
        self._validate(spec)
        path = self.root / spec.workload_id
        wanted = _spec_to_json(spec)
        existing = _read_json(path / "meta.json")
        if existing is not None:
            if existing["spec"] != wanted:
                raise WorkloadConflict(
                    f"workload {spec.workload_id!r} exists with a different spec")
            return self._handle(spec.workload_id)
        with self._lock():
            path.mkdir(parents=True, exist_ok=True)
            # The server's; the workload's uid may only pass through (for bwrap to mount
            # work/, passwd and group), other uids not even that.
            path.chmod(0o700)
            (path / "work").mkdir(exist_ok=True)
            (path / "execs").mkdir(exist_ok=True)
            sandbox: dict[str, Any] = {"mode": self.sandbox}
            if self.sandbox == "bwrap":
                uid = self._free_uid()
                sandbox["uid"] = uid
                os.chown(path, 0, uid)
                path.chmod(0o710)
                os.chown(path / "work", uid, uid)
                (path / "work").chmod(0o700)
                self._bwrap.prepare(path, uid, spec.workload_id)
            port = _free_port(self._ports_in_use()) if spec.kind in SERVING_KINDS else None
            _write_json(path / "meta.json", {
                "spec": wanted, "port": port, "sandbox": sandbox,
                "created_at": datetime.now(UTC).isoformat()})
        return self._handle(spec.workload_id)

    @contextlib.contextmanager
    def _lock(self) -> Any:
        """Serialise uid and port allocation between providers on this root."""
        with open(self.root / ".lock", "a") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            yield

    def _free_uid(self) -> int:
        taken = set()
        for meta_path in self.root.glob("*/meta.json"):
            with contextlib.suppress(ValueError, OSError, KeyError, TypeError):
                meta = _read_json(meta_path) or {}
                taken.add(int(meta["sandbox"]["uid"]))
        # Nor one a process still runs as (a workload of a root since deleted, another root).
        taken |= procfs.process_uids()
        for uid in range(self.uid_base, self.uid_base + _UID_SPAN):
            if uid not in taken:
                return uid
        raise ProviderError(f"no free workload uid from {self.uid_base}")

    @staticmethod
    def _sandbox_of(meta: dict[str, Any]) -> tuple[str, int | None]:
        """How a workload was created (one made before sandboxing existed ran unsandboxed)."""
        sandbox = meta.get("sandbox") or {"mode": "none"}
        uid = sandbox.get("uid")
        return str(sandbox["mode"]), None if uid is None else int(uid)

    def _ports_in_use(self) -> set[int]:
        ports = set()
        for meta_path in self.root.glob("*/meta.json"):
            with contextlib.suppress(ValueError, OSError):
                meta = _read_json(meta_path)
                if meta and meta.get("port") and not (meta_path.parent / "exit.json").exists():
                    ports.add(int(meta["port"]))
        return ports

    def _env(self, path: Path, meta: dict[str, Any]) -> dict[str, str]:
        """The workload's whole environment, built from nothing: never the server's."""
        spec = _spec_from_json(meta["spec"])
        sandboxed = self._sandbox_of(meta)[0] == "bwrap"
        env = {k: os.environ[k] for k in _INHERITED_ENV if k in os.environ}
        env.setdefault("PATH", "/usr/local/bin:/usr/bin:/bin")
        if sandboxed:
            env = self._bwrap.env(env)
        env.update(spec.env)
        env.update({
            "HOME": WORKSPACE if sandboxed else str(path / "work"),
            "WORKLOAD_ID": spec.workload_id,
            "WORKLOAD_KIND": spec.kind.value,
            # Empty hides every GPU from CUDA: a workload without GPUs sees none.
            "CUDA_VISIBLE_DEVICES": ",".join(map(str, spec.gpus.indices or ())),
            "PYTHONUNBUFFERED": "1",
        })
        if meta.get("port"):
            env["PORT"] = str(meta["port"])
        return env

    def start(self, handle: WorkloadHandle) -> WorkloadStatus:
        path = self._dir(handle)
        if (path / "state.json").exists() or (path / "exit.json").exists():
            return self.status(handle)  # already started (or stopped before starting)
        meta = self._meta(path)
        spec = _spec_from_json(meta["spec"])
        mode, uid = self._sandbox_of(meta)
        bwrap = self._bwrap if mode == "bwrap" else None
        argv: list[str] = list(spec.command or _template(spec.kind, bwrap))
        if bwrap is not None:
            assert uid is not None
            argv = ["--sandboxed", "--", *bwrap.launch(
                argv, state_dir=path, uid=uid, workload_id=spec.workload_id,
                port=meta.get("port"), gpus=spec.gpus.indices or ())]
        else:
            argv = ["--", *argv]
        # The server's file: the workload only inherits a write descriptor to it.
        fd = os.open(path / "output.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        with open(fd, "ab") as log:
            proc = subprocess.Popen(
                [sys.executable, "-I", str(SUPERVISOR), str(path), *argv],
                cwd=path if bwrap else path / "work", env=self._env(path, meta),
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True, close_fds=True,
            )
        stat = procfs.read_stat(proc.pid)  # our unreaped child: readable even if it ended
        if stat is None:
            raise ProviderError(f"workload {handle.ref}: supervisor vanished at start")
        self._children[handle.ref] = proc
        _write_json(path / "state.json", {
            "pid": proc.pid, "start_ticks": stat.start_ticks, "boot_id": procfs.boot_id(),
            "started_at": datetime.now(UTC).isoformat(),
        })
        # Until the supervisor has launched the command it does not handle SIGTERM yet; a
        # stop right after start would kill it without an exit record. Wait for it.
        deadline = time.monotonic() + _LAUNCH_TIMEOUT
        while not ((path / "launched.json").exists() or (path / "exit.json").exists()):
            if proc.poll() is not None or time.monotonic() > deadline:
                break
            time.sleep(0.01)
        return self.status(handle)

    # --- status ---------------------------------------------------------------------------

    def _reap(self, ref: str) -> None:
        proc = self._children.get(ref)
        if proc is not None and proc.poll() is not None:
            del self._children[ref]

    def _live_members(self, state: dict[str, Any]) -> list[int]:
        """Processes of the workload's group still alive (empty after a reboot)."""
        if state.get("boot_id") != procfs.boot_id():
            return []
        pid, ticks = int(state["pid"]), int(state["start_ticks"])
        if procfs.is_same_process(pid, ticks):
            return [pid]
        return procfs.group_members(pid, ticks)

    def status(self, handle: WorkloadHandle) -> WorkloadStatus:
        path = self._dir(handle)
        self._reap(handle.ref)
        try:
            state = _read_json(path / "state.json")
            ended = _read_json(path / "exit.json")
        except (ValueError, OSError) as exc:
            return WorkloadStatus(WorkloadPhase.UNKNOWN, detail=f"unreadable state: {exc}")
        started_at = _time(state.get("started_at")) if state else None
        if ended is not None:
            return WorkloadStatus(WorkloadPhase.EXITED, ended.get("exit_code"),
                                  ended.get("detail", ""), started_at,
                                  _time(ended.get("finished_at")))
        if state is None:
            return WorkloadStatus(WorkloadPhase.CREATED, detail="not started")
        try:
            alive = bool(self._live_members(state))
        except (OSError, KeyError, ValueError) as exc:
            return WorkloadStatus(WorkloadPhase.UNKNOWN, detail=f"cannot read /proc: {exc}",
                                  started_at=started_at)
        if alive:
            return WorkloadStatus(WorkloadPhase.RUNNING, started_at=started_at)
        return WorkloadStatus(WorkloadPhase.EXITED, None,
                              "ended without recording an exit code (killed, or the host "
                              "rebooted)", started_at)

    # --- stop / remove --------------------------------------------------------------------

    def stop(self, handle: WorkloadHandle, *, grace_seconds: float) -> WorkloadStatus:
        path = self._dir(handle)
        self._end_exec_sessions(path)
        try:
            state = _read_json(path / "state.json")
        except ValueError as exc:
            raise ProviderError(f"workload {handle.ref}: cannot tell what to stop: {exc}") from exc
        if state is None:
            if not (path / "exit.json").exists():
                _write_json(path / "exit.json", {
                    "exit_code": None, "signal": None, "detail": "stopped before it started",
                    "finished_at": datetime.now(UTC).isoformat()})
            return self.status(handle)
        pgid = int(state["pid"])
        if self._live_members(state):
            if self._sandbox_of(self._meta(path))[0] == "bwrap":
                # The supervisor forwards it into the sandbox; pasta and bwrap must not get it.
                # A supervisor that was killed leaves the sandbox running: signal the
                # workload's main process ourselves.
                ticks = int(state["start_ticks"])
                target = (pgid if procfs.is_same_process(pgid, ticks)
                          else sandbox_main(pgid, ticks))
                with contextlib.suppress(ProcessLookupError):
                    if target is not None:
                        os.kill(target, signal.SIGTERM)
            else:
                self._signal_group(pgid, signal.SIGTERM)
            if not self._wait_gone(handle, state, grace_seconds):
                self._signal_group(pgid, signal.SIGKILL)
                if not self._wait_gone(handle, state, 10.0):
                    raise ProviderError(f"workload {handle.ref}: survived SIGKILL")
                if not (path / "exit.json").exists():
                    _write_json(path / "exit.json", {
                        "exit_code": 128 + signal.SIGKILL, "signal": "SIGKILL",
                        "detail": f"killed: still running {grace_seconds:g}s after SIGTERM",
                        "finished_at": datetime.now(UTC).isoformat()})
        self._reap(handle.ref)
        return self.status(handle)

    @staticmethod
    def _signal_group(pgid: int, signum: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signum)

    def _wait_gone(self, handle: WorkloadHandle, state: dict[str, Any], seconds: float) -> bool:
        deadline = time.monotonic() + seconds
        while True:
            self._reap(handle.ref)
            if not self._live_members(state):
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(_POLL)

    def remove(self, handle: WorkloadHandle) -> None:
        try:
            path = self._dir(handle)
        except WorkloadNotFound:
            return
        if self.status(handle).active:
            raise WorkloadConflict(f"workload {handle.ref} is running; stop it first")
        self._children.pop(handle.ref, None)
        shutil.rmtree(path)

    def list_workloads(self) -> list[WorkloadHandle]:
        return [self._handle(p.parent.name) for p in sorted(self.root.glob("*/meta.json"))]

    # --- logs -----------------------------------------------------------------------------

    def logs(self, handle: WorkloadHandle, *, offset: int = 0, limit: int = 65536,
             tail_lines: int | None = None) -> LogChunk:
        path = self._dir(handle)
        if offset < 0 or limit <= 0:
            raise ValueError("offset must be >= 0 and limit > 0")
        ended = (path / "exit.json").exists()
        try:
            # O_NOFOLLOW: never read through a link planted where the log should be (an
            # unsandboxed workload runs as the server's user and could plant one).
            fd = os.open(path / "output.log", os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        except FileNotFoundError:
            return LogChunk(b"", 0, 0, complete=ended)
        except OSError as exc:
            raise ProviderError(f"workload {handle.ref}: its log is not a file ({exc})") from exc
        with open(fd, "rb") as f:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise ProviderError(f"workload {handle.ref}: its log is not a file")
            size = os.fstat(f.fileno()).st_size
            if tail_lines is not None:
                offset = self._tail_start(f, size, tail_lines, limit)
            offset = min(offset, size)
            f.seek(offset)
            data = f.read(min(limit, size - offset))
        next_offset = offset + len(data)
        return LogChunk(data, offset, next_offset, complete=ended and next_offset >= size)

    @staticmethod
    def _tail_start(f: Any, size: int, lines: int, limit: int) -> int:
        """Offset where the last ``lines`` lines begin (reading back at most ``limit``)."""
        if lines <= 0:
            return size
        start = max(0, size - limit)
        f.seek(start)
        window = f.read(size - start)
        # A final line without its newline still counts as a line.
        end = len(window) - 1 if window.endswith(b"\n") else len(window)
        cut = end
        for _ in range(lines):
            cut = window.rfind(b"\n", 0, cut)
            if cut < 0:
                return start
        return start + cut + 1

    # --- capabilities ---------------------------------------------------------------------

    def usage(self, handles: Sequence[WorkloadHandle]) -> dict[str, WorkloadUsage]:
        """The processes of each running workload are everything below its supervisor (the
        sandbox chain included: pasta forwards the workload's traffic); the supervisor itself
        is ours, not the workload's. No cgroups yet, so a process that escaped the tree (a
        double fork re-parented to init) is not counted."""
        roots: dict[str, int] = {}
        boot = procfs.boot_id()
        for handle in handles:
            try:
                path = self._dir(handle)
                state = _read_json(path / "state.json")
            except (WorkloadNotFound, ValueError, OSError):
                continue
            if (state is None or (path / "exit.json").exists()
                    or state.get("boot_id") != boot
                    or not procfs.is_same_process(int(state["pid"]),
                                                  int(state["start_ticks"]))):
                continue
            roots[handle.ref] = int(state["pid"])
        if not roots:
            return {}
        table = procfs.scan_usage()
        found = {}
        for ref, root in roots.items():
            pids = procfs.descendants(root, table)
            demand = [procfs.cpu_demand_ns(p) for p in pids]
            found[ref] = WorkloadUsage(
                cpu_seconds=sum(table[p].cpu_ticks for p in pids) / procfs.CLOCK_TICKS,
                memory_bytes=sum(table[p].rss_pages for p in pids) * procfs.PAGE_SIZE,
                processes=len(pids),
                cpu_demand_seconds=None if None in demand else sum(
                    d for d in demand if d is not None) / 1e9)
        return found

    def endpoint(self, handle: WorkloadHandle) -> Endpoint:
        meta = self._meta(self._dir(handle))
        if not meta.get("port"):
            kind = meta["spec"]["kind"]
            raise UnsupportedWorkload(f"a {kind} workload serves no endpoint")
        return Endpoint(self.endpoint_host, int(meta["port"]))

    def exec(self, handle: WorkloadHandle, command: Sequence[str] | None = None, *,
             cols: int = 80, rows: int = 24) -> PtySession:
        path = self._dir(handle)
        current = self.status(handle)
        if current.phase is not WorkloadPhase.RUNNING:
            raise WorkloadConflict(
                f"workload {handle.ref} is {current.phase.value}; exec needs it running")
        meta = self._meta(path)
        env = self._env(path, meta)
        env["TERM"] = "xterm-256color"
        argv = list(command) if command else [
            "/bin/bash" if Path("/bin/bash").exists() else "/bin/sh", "-i"]
        mode, uid = self._sandbox_of(meta)
        if mode == "bwrap":
            # The terminal enters the workload's sandbox; a shell on the host would be the
            # very hole the sandbox closes.
            state = _read_json(path / "state.json") or {}
            main = sandbox_main(int(state["pid"]), int(state["start_ticks"])) if state else None
            if main is None or uid is None:
                raise WorkloadConflict(f"workload {handle.ref}: its sandbox is not running")
            argv = self._bwrap.enter(argv, sandbox_pid=main, uid=uid)
        execs = path / "execs"

        def forget(pid: int) -> None:
            (execs / f"{pid}.json").unlink(missing_ok=True)

        session = PtySession(argv, cwd=path if mode == "bwrap" else path / "work", env=env,
                             cols=cols, rows=rows, on_close=forget)
        stat = procfs.read_stat(session.pid)
        if stat is not None:
            _write_json(execs / f"{session.pid}.json",
                        {"pid": session.pid, "start_ticks": stat.start_ticks})
        return session

    def _end_exec_sessions(self, path: Path) -> None:
        """Hang up interactive sessions (each leads its own session, outside the group)."""
        for record in (path / "execs").glob("*.json"):
            with contextlib.suppress(ValueError, OSError, KeyError):
                data = _read_json(record) or {}
                pid, ticks = int(data["pid"]), int(data["start_ticks"])
                if procfs.is_same_process(pid, ticks):
                    for signum in (signal.SIGHUP, signal.SIGKILL):
                        self._signal_group(pid, signum)
            record.unlink(missing_ok=True)
