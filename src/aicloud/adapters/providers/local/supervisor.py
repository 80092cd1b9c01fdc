"""Runs one workload command and records how it ended (stdlib only, run as a script).

    python supervisor.py STATE_DIR [--sandboxed] -- COMMAND [ARGS...]

It leads the workload's process group, so a signal to the group reaches the command too; it
outlives a SIGTERM to write STATE_DIR/exit.json, which lets a control plane that restarted
(and is no longer this process's parent) still learn the exit code. STATE_DIR/launched.json
says the command was started (and that SIGTERM is handled from then on).

With ``--sandboxed`` COMMAND is the sandbox chain (setpriv > pasta > bwrap > trampoline >
the workload; see sandbox.py). This process stays outside, as the server's user, out of the
workload's reach: the workload cannot see it (PID namespace), signal it, or write the files it
records. A SIGTERM for a sandboxed workload is sent to this process alone (pasta and bwrap
would die of it and take the workload down with SIGKILL): it forwards the signal to the
processes directly under the sandbox's init, the workload's main process first among them. A
SIGKILL to the group ends the sandbox, whose init takes every process inside with it. A
status of 128+N from the chain is the workload killed by signal N (bwrap's convention).
"""

import json
import os
import signal
import subprocess
import sys
from datetime import UTC, datetime

_STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
# As in sandbox.py (this script imports nothing of the package).
_BWRAP_ARGS_FILE = "bwrap.args"
_ARGS_FD_PLACEHOLDER = "{bwrap-args-fd}"
_pending: list[int] = []  # stop signals received and not yet delivered into the sandbox


def _children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(p) for p in f.read().split()]
    except OSError:
        return []


def _init_depth(pid: int) -> int:
    """How deeply nested the PID namespace is that ``pid`` is the init (pid 1) of; 0 when
    it is no namespace's init."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("NSpid:"):
                    levels = line.split()[1:]
                    return len(levels) if len(levels) > 1 and levels[-1] == "1" else 0
    except OSError:
        pass
    return 0


def _sandbox_init(root: int) -> int | None:
    """The workload's init: the innermost namespace init under ``root`` (pasta makes a PID
    namespace of its own around bwrap)."""
    best, best_depth, todo = None, 0, [root]
    while todo:
        pid = todo.pop()
        depth = _init_depth(pid)
        if depth > best_depth:
            best, best_depth = pid, depth
        todo.extend(_children(pid))
    return best


def _deliver(chain_pid: int) -> bool:
    """Send the pending signals to the processes under the sandbox's init; False when the
    sandbox is not up yet (the main loop tries again)."""
    init = _sandbox_init(chain_pid)
    if init is None:
        return False
    for signum in _pending:
        for pid in _children(init):
            try:
                os.kill(pid, signum)
            except ProcessLookupError:
                pass
    _pending.clear()
    return True


def _write(path: str, data: dict) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(data, f)
    os.replace(tmp, path)


def _record(state_dir: str, code: int | None, signal_name: str | None, detail: str) -> None:
    _write(os.path.join(state_dir, "exit.json"),
           {"exit_code": code, "signal": signal_name, "detail": detail,
            "finished_at": datetime.now(UTC).isoformat()})


def _signal_name(number: int) -> str | None:
    try:
        return signal.Signals(number).name
    except ValueError:
        return None


def _await_sandbox(child: subprocess.Popen) -> None:
    """Return once the workload's main process runs in its sandbox (or the chain ended), so
    that "launched" means what it says and a terminal can enter it right away."""
    for _ in range(200):  # 10 s: bwrap and pasta take tens of milliseconds
        init = _sandbox_init(child.pid)
        if (init is not None and _children(init)) or child.poll() is not None:
            return
        try:
            child.wait(timeout=0.05)
        except subprocess.TimeoutExpired:
            pass


def main() -> int:
    state_dir = os.path.abspath(sys.argv[1])
    rest = sys.argv[2:]
    sandboxed = bool(rest) and rest[0] == "--sandboxed"
    if sandboxed:
        rest = rest[1:]
    if not rest or rest[0] != "--" or len(rest) < 2:
        print("usage: supervisor.py STATE_DIR [--sandboxed] -- COMMAND [ARGS...]",
              file=sys.stderr)
        return 2
    argv = rest[1:]
    keep: tuple[int, ...] = ()
    if sandboxed and _ARGS_FD_PLACEHOLDER in argv:
        # bwrap reads its options from this descriptor (pasta hands it down), so that the
        # host paths in them never show on a command line inside the sandbox.
        args_fd = os.open(os.path.join(state_dir, _BWRAP_ARGS_FILE), os.O_RDONLY)
        argv = [str(args_fd) if a == _ARGS_FD_PLACEHOLDER else a for a in argv]
        keep = (args_fd,)
    # A handler, not SIG_IGN: ignored signals stay ignored across exec, handled ones reset,
    # so an unsandboxed command still gets the default SIGTERM behaviour.
    for signum in _STOP_SIGNALS:
        signal.signal(signum, lambda signum, _frame: _pending.append(signum) if sandboxed
                      else None)
    try:
        child = subprocess.Popen(argv, pass_fds=keep)
    except OSError as exc:
        print(f"[aicloud] cannot start {argv[0]}: {exc}", file=sys.stderr, flush=True)
        _record(state_dir, 127, None, f"cannot start: {exc}")
        return 127
    if sandboxed:
        _await_sandbox(child)
    _write(os.path.join(state_dir, "launched.json"),
           {"child_pid": child.pid, "launched_at": datetime.now(UTC).isoformat()})
    while True:
        # A signal handler runs inside wait() and wait() then resumes, so poll: a stop
        # signal that came before the sandbox was up is delivered on a later turn.
        try:
            rc = child.wait(timeout=0.1 if sandboxed else None)
            break
        except subprocess.TimeoutExpired:
            pass
        if _pending:
            _deliver(child.pid)
    name = None
    if rc < 0:
        name = _signal_name(-rc)
        rc = 128 - rc
    elif sandboxed and rc > 128:
        name = _signal_name(rc - 128)
    detail = f"killed by {name}" if name else f"exited with code {rc}"
    print(f"[aicloud] {detail}", file=sys.stderr, flush=True)
    _record(state_dir, rc, name, detail)
    return rc


if __name__ == "__main__":
    sys.exit(main())
