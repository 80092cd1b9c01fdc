"""An interactive process on a pseudo-terminal: the local form of an ExecSession."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import pty
import select
import signal
import struct
import subprocess
import sys
import termios
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from aicloud.adapters.providers.local import procfs

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
        # Non-blocking, so a write to a terminal whose program reads nothing can notice a
        # close from another thread instead of blocking it forever.
        os.set_blocking(master, False)
        self._master = master
        self._io = threading.Lock()  # the descriptor: never closed under a write or resize
        stat = procfs.read_stat(self._proc.pid)  # our unreaped child: readable even if ended
        self._start_ticks = stat.start_ticks if stat is not None else None
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
        except BlockingIOError:  # taken by another reader between select and read
            return None
        except OSError:  # EIO: every process holding the terminal has gone
            return b""

    def write(self, data: bytes) -> None:
        """Blocks while the terminal's input is full; a close from another thread ends the
        wait (OSError EIO)."""
        view = memoryview(data)
        with self._io:
            while view:
                if self._closed:
                    raise OSError(errno.EIO, "the terminal is closed")
                try:
                    n = os.write(self._master, view)
                except BlockingIOError:
                    select.select([], [self._master], [], 0.05)
                    continue
                view = view[n:]

    def resize(self, cols: int, rows: int) -> None:
        with self._io:
            if self._closed:
                raise OSError(errno.EIO, "the terminal is closed")
            _set_winsize(self._master, cols, rows)

    def wait(self, timeout: float | None = None) -> int | None:
        try:
            return self._proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True  # a write waiting on a full terminal gives up within 50 ms
        self._end_session()
        with self._io:
            os.close(self._master)
        if self._on_close is not None:
            self._on_close(self._proc.pid)

    def _members(self) -> list[int]:
        """The processes to end: the child and its whole terminal session. A job-control
        shell gives each job a process group of its own, so the child's group alone misses
        every background job (``nohup`` ones too: SIGKILL follows). A process that made a
        session of its own (``setsid``) has left the terminal: it lives as long as the
        workload."""
        members = set()
        if self._start_ticks is not None:
            members.update(procfs.session_members(self._proc.pid, self._start_ticks))
        if self._proc.poll() is None:  # not yet its own session leader, or ticks unknown
            members.add(self._proc.pid)
        return sorted(members)

    def _end_session(self) -> None:
        # SIGHUP is what a hung-up terminal means (shells pass it to their jobs); SIGCONT
        # wakes a stopped job so it sees it; SIGKILL ends whatever ignored it.
        for signals, grace in (((signal.SIGHUP, signal.SIGCONT), 1.0), ((signal.SIGKILL,), 5.0)):
            members = self._members()
            if not members:
                return
            for pid in members:
                for signum in signals:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signum)
            deadline = time.monotonic() + grace
            while self._members():
                if time.monotonic() >= deadline:
                    break
                time.sleep(0.02)

    def __enter__(self) -> PtySession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
