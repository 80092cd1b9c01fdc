"""An interactive process on a pseudo-terminal: the local form of an ExecSession."""

from __future__ import annotations

import contextlib
import fcntl
import os
import pty
import select
import signal
import struct
import subprocess
import sys
import termios
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

# The child makes the terminal its controlling tty in a session of its own, then becomes the
# command. Done in a fresh interpreter rather than preexec_fn, which is unsafe in a threaded
# server.
_TRAMPOLINE = "import os, sys; os.login_tty(0); os.execvp(sys.argv[1], sys.argv[1:])"


def _set_winsize(fd: int, cols: int, rows: int) -> None:
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))


class PtySession:
    def __init__(self, argv: Sequence[str], *, cwd: Path, env: Mapping[str, str],
                 cols: int, rows: int, on_close: Callable[[int], None] | None = None):
        master, slave = pty.openpty()
        _set_winsize(master, cols, rows)
        try:
            self._proc = subprocess.Popen(
                [sys.executable, "-c", _TRAMPOLINE, *argv],
                stdin=slave, stdout=slave, stderr=slave, cwd=cwd, env=dict(env),
                close_fds=True,
            )
        except BaseException:
            os.close(master)
            raise
        finally:
            # Only the child may hold the terminal's slave end, or reads never see EOF.
            os.close(slave)
        self._master = master
        self._on_close = on_close
        self._closed = False

    @property
    def pid(self) -> int:
        return self._proc.pid

    def read(self, size: int = 65536, timeout: float | None = None) -> bytes | None:
        if self._closed:
            return b""
        ready, _, _ = select.select([self._master], [], [], timeout)
        if not ready:
            return None
        try:
            return os.read(self._master, size)
        except OSError:  # EIO: every process holding the terminal has gone
            return b""

    def write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            n = os.write(self._master, view)
            view = view[n:]

    def resize(self, cols: int, rows: int) -> None:
        _set_winsize(self._master, cols, rows)

    def wait(self, timeout: float | None = None) -> int | None:
        try:
            return self._proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._proc.poll() is None:
            # The session id is the child's pid (login_tty made it a session leader).
            for signum, grace in ((signal.SIGHUP, 1.0), (signal.SIGKILL, 5.0)):
                try:
                    os.killpg(self._proc.pid, signum)
                except ProcessLookupError:  # not yet its own session: signal it alone
                    with contextlib.suppress(ProcessLookupError):
                        self._proc.send_signal(signum)
                if self.wait(grace) is not None:
                    break
        os.close(self._master)
        if self._on_close is not None:
            self._on_close(self._proc.pid)

    def __enter__(self) -> PtySession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
