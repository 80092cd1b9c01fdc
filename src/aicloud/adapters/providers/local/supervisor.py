"""Runs one workload command and records how it ended (stdlib only, run as a script).

    python supervisor.py STATE_DIR -- COMMAND [ARGS...]

It leads the workload's process group, so a signal to the group reaches the command too; it
outlives a SIGTERM to write STATE_DIR/exit.json, which lets a control plane that restarted
(and is no longer this process's parent) still learn the exit code. STATE_DIR/launched.json
says the command was started (and that SIGTERM is handled from then on).
"""

import json
import os
import signal
import subprocess
import sys
from datetime import UTC, datetime


def _write(path: str, data: dict) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(data, f)
    os.replace(tmp, path)


def _record(state_dir: str, code: int | None, signal_name: str | None, detail: str) -> None:
    _write(os.path.join(state_dir, "exit.json"),
           {"exit_code": code, "signal": signal_name, "detail": detail,
            "finished_at": datetime.now(UTC).isoformat()})


def main() -> int:
    state_dir, sep, argv = sys.argv[1], sys.argv[2], sys.argv[3:]
    if sep != "--" or not argv:
        print("usage: supervisor.py STATE_DIR -- COMMAND [ARGS...]", file=sys.stderr)
        return 2
    # A handler, not SIG_IGN: ignored signals stay ignored across exec, handled ones reset,
    # so the command still gets the default SIGTERM behaviour.
    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, lambda *_: None)
    try:
        child = subprocess.Popen(argv)
    except OSError as exc:
        print(f"[aicloud] cannot start {argv[0]}: {exc}", file=sys.stderr, flush=True)
        _record(state_dir, 127, None, f"cannot start: {exc}")
        return 127
    _write(os.path.join(state_dir, "launched.json"),
           {"child_pid": child.pid, "launched_at": datetime.now(UTC).isoformat()})
    rc = child.wait()
    if rc < 0:
        name = signal.Signals(-rc).name
        code, detail = 128 - rc, f"killed by {name}"
    else:
        name, code, detail = None, rc, f"exited with code {rc}"
    print(f"[aicloud] {detail}", file=sys.stderr, flush=True)
    _record(state_dir, code, name, detail)
    return code


if __name__ == "__main__":
    sys.exit(main())
