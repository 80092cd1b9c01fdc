"""Terminal sessions on the node: shells that outlive the connection that opened them.

The keeper runs where the workloads run (inside the node agent), beside the provider, and
needs no database: it is driven by calls (open, attach, write, resize, keepalive, detach,
close) and reports through callbacks, so whatever carries the bytes (the agent's link to the
API, a WebSocket, a test) plugs onto it.

A session is an :class:`~aicloud.adapters.providers.base.ExecSession` opened through the
provider's ``SupportsExec`` (on the local provider: a real PTY in the workload's sandbox). One
thread per session reads its output all the time, attached or not, so the shell never blocks
on a full terminal and nothing it prints is lost to the recording:

- every output byte gets an absolute offset (0 = the first byte the session printed); the
  last ``ring_buffer_bytes`` are kept, so a client that comes back says where it stopped
  (``attach(session_id, sink, from_offset=n)``) and receives exactly what it missed, then live
  output, each byte once. When part of what it missed has left the buffer, the attach says how
  many bytes (:attr:`Replay.lost`) instead of pretending;
- one client is attached at a time; a second attach takes the session over (a reconnect after
  a network blip usually arrives before the old connection is known dead), and the first
  one's sink is told;
- a detached session is closed once ``reattach_window`` passes; any session is closed after
  ``idle_timeout`` without activity (input, a resize, or output: a job printing progress is
  not idle). A keepalive is not activity: it only proves the client is still there, and with
  ``keepalive_timeout`` set a client that stops sending them is detached;
- closing hangs up the terminal and ends the shell and every process of its terminal session;
- each session is recorded in asciicast v2 (output always, input when asked) on this node, so
  output produced while nobody was attached is in the recording too. A session whose
  recording cannot be written (disk full) is ended: no terminal runs unrecorded. Sessions do
  not survive the keeper's process (the terminal's master end goes with it); the next keeper
  finishes the recordings they left (:attr:`TerminalKeeper.recovered`).

Sinks are called on the session's thread (the backlog on the attaching thread, before
``attach`` returns, so it always precedes live output) while the session's lock is held:
they must hand the bytes on (a queue, ``loop.call_soon_threadsafe``) and never block or call
back into the keeper from the callback.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Protocol

from aicloud.adapters.providers.base import ExecSession, SupportsExec, WorkloadHandle
from aicloud.platform.access.terminal_recording import (
    SUFFIX,
    RecordingDigest,
    RecordingWriter,
    file_digest,
    purge_recordings,
)
from aicloud.shared.config import TerminalConfig
from aicloud.shared.errors import Conflict, NotFound, ValidationFailed
from aicloud.shared.ids import new_id

log = logging.getLogger(__name__)

_SESSION_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
# How often a session's thread wakes without output, to notice a close request or a passed
# deadline. Output itself is read the moment it arrives.
_TICK = 0.1
_READ_SIZE = 65536
_ENDED_REMEMBERED = 1024
MAX_DIMENSION = 10_000


@dataclass(frozen=True)
class TerminalPolicy:
    """How the keeper treats sessions. Seconds; None turns a limit off."""

    ring_buffer_bytes: int = 1 << 20
    idle_timeout: float | None = 3600.0
    reattach_window: float = 900.0
    keepalive_timeout: float | None = None
    record_input: bool = False
    max_sessions_per_workload: int = 16
    term: str = "xterm-256color"  # what the provider's terminal announces (header only)

    def __post_init__(self) -> None:
        if self.ring_buffer_bytes <= 0 or self.max_sessions_per_workload <= 0:
            raise ValueError("ring_buffer_bytes and max_sessions_per_workload must be positive")
        for name in ("idle_timeout", "keepalive_timeout"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise ValueError(f"{name} must be positive (or None for no limit)")
        if self.reattach_window < 0:
            raise ValueError("reattach_window cannot be negative")

    @classmethod
    def from_config(cls, config: TerminalConfig) -> TerminalPolicy:
        """The profile's ``terminal`` settings (0 there means no limit)."""
        return cls(ring_buffer_bytes=config.ring_buffer_bytes,
                   idle_timeout=config.idle_timeout_seconds or None,
                   reattach_window=config.reattach_window_seconds,
                   keepalive_timeout=config.keepalive_timeout_seconds or None,
                   record_input=config.record_input,
                   max_sessions_per_workload=config.max_sessions_per_workload)


class SessionState(StrEnum):
    ATTACHED = "attached"
    DETACHED = "detached"
    CLOSED = "closed"


class EndReason(StrEnum):
    EXITED = "exited"  # the shell (or command) ended by itself
    CLOSED = "closed"  # someone closed it
    IDLE = "idle"  # idle_timeout passed without activity
    ABANDONED = "abandoned"  # detached for longer than reattach_window
    TIMEOUT = "timeout"  # a one-shot exec ran past its timeout
    SHUTDOWN = "shutdown"  # the keeper stopped (the agent is going down)
    FAILED = "failed"  # reading the terminal failed


class DetachReason(StrEnum):
    DETACHED = "detached"  # the client detached (its connection dropped)
    REPLACED = "replaced"  # another attach took the session over
    KEEPALIVE_LOST = "keepalive-lost"  # no keepalive within keepalive_timeout


@dataclass(frozen=True)
class SessionEnd:
    session_id: str
    workload: WorkloadHandle
    reason: EndReason
    exit_code: int | None  # None: killed by the keeper, or the provider could not tell
    output_bytes: int
    opened_at: datetime
    ended_at: datetime
    recording: RecordingDigest | None


@dataclass(frozen=True)
class SessionInfo:
    session_id: str
    workload: WorkloadHandle
    state: SessionState
    cols: int
    rows: int
    output_bytes: int  # the offset the next output byte will have
    buffer_start: int  # the oldest offset still held for a reattach
    record_input: bool
    command: tuple[str, ...] | None
    opened_at: datetime
    detached_at: datetime | None
    recording: Path


@dataclass(frozen=True)
class Replay:
    """What an attach delivered from the buffer before live output."""

    from_offset: int  # what the client asked for
    start: int  # the first offset delivered (> from_offset when bytes were lost)
    end: int  # live output continues from this offset

    @property
    def lost(self) -> int:
        """Bytes the client missed that the buffer no longer holds (see the recording)."""
        return self.start - self.from_offset


class TerminalSink(Protocol):
    """Where an attached client's bytes go. Called with the session's lock held: hand on,
    never block (see the module doc)."""

    def output(self, offset: int, data: bytes) -> None: ...

    def detached(self, reason: DetachReason) -> None: ...

    def ended(self, end: SessionEnd) -> None: ...


class SessionNotFound(NotFound):
    code, title = "terminal-session-not-found", "No such terminal session"


class SessionGone(Conflict):
    """The session ended, or this attachment no longer holds it."""

    code, title = "terminal-session-gone", "The terminal session is no longer attached"

    def __init__(self, detail: str, end: SessionEnd | None = None):
        super().__init__(detail)
        self.end = end


class TooManySessions(Conflict):
    code, title = "terminal-session-limit", "Too many terminal sessions on this workload"


class OutputBuffer:
    """The last ``capacity`` bytes of a stream, addressed by absolute offset."""

    def __init__(self, capacity: int):
        self.capacity = capacity
        self._data = bytearray()
        self.start = 0  # the offset of _data[0]

    @property
    def end(self) -> int:
        return self.start + len(self._data)

    def append(self, data: bytes) -> int:
        """Adds ``data`` and returns the offset of its first byte."""
        offset = self.end
        self._data += data
        excess = len(self._data) - self.capacity
        if excess > 0:
            del self._data[:excess]
            self.start += excess
        return offset

    def since(self, offset: int) -> tuple[int, bytes]:
        """(the first offset held at or after ``offset``, the bytes from there to the end)."""
        if offset < 0 or offset > self.end:
            raise ValidationFailed(f"offset {offset} is outside 0..{self.end}: the session "
                                   f"has printed {self.end} bytes")
        start = max(offset, self.start)
        return start, bytes(self._data[start - self.start:])


@dataclass
class _Session:
    session_id: str
    workload: WorkloadHandle
    exec: ExecSession
    recorder: RecordingWriter
    buffer: OutputBuffer
    cols: int
    rows: int
    record_input: bool
    command: tuple[str, ...] | None
    opened_at: datetime
    last_activity: float
    # Guards the buffer, the attachment and the state. Never held around the terminal's
    # write: a write blocked on a program that reads no input must not stop output from
    # being read (ExecSession allows a write beside the reading thread, and a close).
    lock: threading.RLock = field(default_factory=threading.RLock)
    sink: TerminalSink | None = None
    attach_epoch: int = 0
    last_keepalive: float = 0.0
    detached_since: float | None = None
    detached_at: datetime | None = None
    close_reason: EndReason | None = None
    end: SessionEnd | None = None
    ended: threading.Event = field(default_factory=threading.Event)
    thread: threading.Thread | None = None


class Attachment:
    """One client's hold on a session: its input, resizes and keepalives. Invalid once the
    session is taken over by another attach, detached or ended (:class:`SessionGone`)."""

    def __init__(self, keeper: TerminalKeeper, session: _Session, epoch: int, replay: Replay):
        self._keeper = keeper
        self._session = session
        self._epoch = epoch
        self.replay = replay

    @property
    def session_id(self) -> str:
        return self._session.session_id

    def _check(self) -> None:
        s = self._session
        if s.end is not None:
            raise SessionGone(f"terminal session {s.session_id} has ended ({s.end.reason})",
                              s.end)
        if s.attach_epoch != self._epoch or s.sink is None:
            raise SessionGone(f"terminal session {s.session_id} is attached elsewhere now")

    def write(self, data: bytes) -> None:
        """Input, as typed (keys, pasted text, control characters)."""
        s = self._session
        with s.lock:
            self._check()
            s.last_activity = self._keeper.clock()
            s.last_keepalive = s.last_activity
        if s.record_input:
            s.recorder.input(data)
        self._io(lambda: s.exec.write(data))

    def resize(self, cols: int, rows: int) -> None:
        _check_size(cols, rows)
        s = self._session
        with s.lock:
            self._check()
            s.last_activity = self._keeper.clock()
            s.cols, s.rows = cols, rows
            s.recorder.resize(cols, rows)
        self._io(lambda: s.exec.resize(cols, rows))

    def _io(self, call: Callable[[], None]) -> None:
        s = self._session
        try:
            call()
        except OSError as exc:  # closed under us: the session is ending
            s.ended.wait(10.0)
            raise SessionGone(f"terminal session {s.session_id} has ended", s.end) from exc

    def keepalive(self) -> None:
        s = self._session
        with s.lock:
            self._check()
            s.last_keepalive = self._keeper.clock()

    def detach(self) -> None:
        """The client went away; the session lives on for ``reattach_window``. Idempotent."""
        s = self._session
        with s.lock:
            if s.end is None and s.attach_epoch == self._epoch and s.sink is not None:
                self._keeper._detach_locked(s, DetachReason.DETACHED)


@dataclass(frozen=True)
class ExecResult:
    session_id: str
    exit_code: int | None  # None when it was killed (timeout) or its code is unknown
    output: bytes  # terminal output: stdout and stderr interleaved, CRLF line ends
    truncated: bool  # output was longer than max_output; the recording has all of it
    end: SessionEnd


def _check_size(cols: int, rows: int) -> None:
    if not (0 < cols <= MAX_DIMENSION and 0 < rows <= MAX_DIMENSION):
        raise ValidationFailed(f"terminal size {cols}x{rows}: each side must be in "
                               f"1..{MAX_DIMENSION}")


class TerminalKeeper:
    """The terminal sessions of one node. Thread-safe."""

    def __init__(self, provider: SupportsExec, recordings_dir: Path, *,
                 policy: TerminalPolicy | None = None,
                 on_end: Callable[[SessionEnd], None] | None = None,
                 clock: Callable[[], float] = time.monotonic):
        """``on_end`` is called once per session when it has ended and its recording is
        complete (on the session's thread): where the agent reports the digest upstream.
        One keeper per ``recordings_dir``: a new one finishes every unfinished recording in
        it as left by a dead predecessor."""
        self.provider = provider
        self.recordings_dir = Path(recordings_dir)
        self.recordings_dir.mkdir(parents=True, exist_ok=True)
        self.recordings_dir.chmod(0o700)
        self.policy = policy or TerminalPolicy()
        self.clock = clock
        self._on_end = on_end
        self._lock = threading.Lock()
        self._sessions: dict[str, _Session] = {}
        self._opening: dict[str, WorkloadHandle] = {}  # session id -> workload, starting
        self._ended: OrderedDict[str, SessionEnd] = OrderedDict()
        self._stopping = False
        self.recovered = self._finish_abandoned_recordings()

    def _finish_abandoned_recordings(self) -> list[RecordingDigest]:
        """Recordings a previous keeper never finished (its process died with its sessions):
        their digest, written beside them, for the agent to report upstream. A line cut off
        by the crash stays as it is (the file is evidence; ``read_recording`` names it)."""
        found = []
        for path in sorted(self.recordings_dir.glob(f"*{SUFFIX}")):
            digest_file = path.with_name(path.name + ".sha256")
            if path.is_symlink() or not path.is_file() or digest_file.exists():
                continue
            digest = file_digest(path)
            digest_file.write_text(f"{digest.sha256}  {path.name}\n")
            found.append(digest)
        if found:
            log.warning("finished %d terminal recording(s) left by a previous keeper",
                        len(found))
        return found

    # --- opening -----------------------------------------------------------------------------

    def open(self, workload: WorkloadHandle, *, session_id: str | None = None,
             command: Sequence[str] | None = None, cols: int = 80, rows: int = 24,
             record_input: bool | None = None) -> SessionInfo:
        """Starts a session (default: the provider's login shell) and its recording. It runs
        detached until someone attaches, so the reattach window applies from the start.
        ``session_id`` is the caller's (the control plane names sessions, so its audit
        event can), or a new one."""
        s = self._open(workload, session_id, command, cols, rows, record_input, sink=None)
        return self._info(s)

    def open_attached(self, workload: WorkloadHandle, sink: TerminalSink, *,
                      session_id: str | None = None, command: Sequence[str] | None = None,
                      cols: int = 80, rows: int = 24,
                      record_input: bool | None = None) -> Attachment:
        """:meth:`open` with ``sink`` attached before the first byte is read: nothing is
        missed even from a command that ends at once."""
        s = self._open(workload, session_id, command, cols, rows, record_input, sink=sink)
        return Attachment(self, s, s.attach_epoch, Replay(0, 0, 0))

    def _open(self, workload: WorkloadHandle, session_id: str | None,
              command: Sequence[str] | None, cols: int, rows: int, record_input: bool | None,
              sink: TerminalSink | None) -> _Session:
        _check_size(cols, rows)
        session_id = session_id or new_id("term")
        if not _SESSION_ID.match(session_id):
            raise ValidationFailed(f"session id {session_id!r}: use letters, digits, '_', "
                                   "'-', '.' (at most 128)")
        record_input = self.policy.record_input if record_input is None else record_input
        argv = tuple(command) if command else None
        path = self.recordings_dir / f"{session_id}{SUFFIX}"
        with self._lock:
            if self._stopping:
                raise SessionGone("the terminal keeper is shutting down")
            if (session_id in self._sessions or session_id in self._opening
                    or session_id in self._ended or path.exists()):
                raise Conflict(f"terminal session {session_id} exists already")
            live = (sum(1 for s in self._sessions.values() if s.workload == workload)
                    + sum(1 for w in self._opening.values() if w == workload))
            if live >= self.policy.max_sessions_per_workload:
                raise TooManySessions(f"workload {workload.ref} has {live} terminal sessions "
                                      f"open, the most allowed")
            opened_at = datetime.now(UTC)
            # Created under the lock: its exclusive create is what reserves the session id
            # while the (slower) terminal starts outside it.
            recorder = RecordingWriter(
                path, width=cols, height=rows, started_at=opened_at,
                env={"TERM": self.policy.term}, title=f"{session_id} on {workload.ref}",
                command=" ".join(argv) if argv else None, clock=self.clock)
            self._opening[session_id] = workload  # counts against the limit meanwhile
        try:
            exec_session = self.provider.exec(workload, argv, cols=cols, rows=rows)
        except BaseException:
            with self._lock:
                del self._opening[session_id]
            recorder.close()
            path.unlink(missing_ok=True)
            path.with_name(path.name + ".sha256").unlink(missing_ok=True)
            raise
        now = self.clock()
        s = _Session(
            session_id=session_id, workload=workload, exec=exec_session, recorder=recorder,
            buffer=OutputBuffer(self.policy.ring_buffer_bytes), cols=cols, rows=rows,
            record_input=record_input, command=argv, opened_at=opened_at, last_activity=now,
            detached_since=None if sink else now, sink=sink, attach_epoch=1 if sink else 0,
            last_keepalive=now)
        with self._lock:
            del self._opening[session_id]
            self._sessions[session_id] = s
            if self._stopping:  # shut down while it started: it ends at once
                s.close_reason = EndReason.SHUTDOWN
        s.thread = threading.Thread(target=self._pump, args=(s,), daemon=True,
                                    name=f"terminal-{session_id}")
        s.thread.start()
        return s

    # --- attaching ---------------------------------------------------------------------------

    def attach(self, session_id: str, sink: TerminalSink, *,
               from_offset: int | None = None) -> Attachment:
        """Attaches ``sink``: first everything from ``from_offset`` the buffer still holds
        (None: all it holds), then live output. Takes the session over from a client
        attached before."""
        s = self._live(session_id)
        with s.lock:
            if s.end is not None:
                raise SessionGone(f"terminal session {session_id} has ended ({s.end.reason})",
                                  s.end)
            asked = s.buffer.start if from_offset is None else from_offset
            start, backlog = s.buffer.since(asked)
            if s.sink is not None:
                self._detach_locked(s, DetachReason.REPLACED)
            if backlog:
                sink.output(start, backlog)
            s.sink = sink
            s.attach_epoch += 1
            s.detached_since = None
            s.detached_at = None
            s.last_keepalive = self.clock()
            return Attachment(self, s, s.attach_epoch, Replay(asked, start, s.buffer.end))

    def _detach_locked(self, s: _Session, reason: DetachReason) -> None:
        sink, s.sink = s.sink, None
        s.attach_epoch += 1
        s.detached_since = self.clock()
        s.detached_at = datetime.now(UTC)
        if sink is not None:
            _notify(sink.detached, reason)

    # --- closing -----------------------------------------------------------------------------

    def close(self, session_id: str, *, timeout: float = 10.0,
              reason: EndReason = EndReason.CLOSED) -> SessionEnd:
        """Hangs the session up and waits for its end (shell gone, recording complete).
        Closing an ended session returns how it ended."""
        with self._lock:
            ended = self._ended.get(session_id)
            s = self._sessions.get(session_id)
        if ended is not None:
            return ended
        if s is None:
            raise SessionNotFound(f"no terminal session {session_id}")
        with s.lock:
            if s.close_reason is None:
                s.close_reason = reason
        if not s.ended.wait(timeout):
            raise TimeoutError(f"terminal session {session_id} did not end within {timeout}s")
        assert s.end is not None
        return s.end

    def close_workload(self, workload: WorkloadHandle) -> list[SessionEnd]:
        """Closes every session on ``workload`` (before it is stopped)."""
        return [self.close(info.session_id) for info in self.sessions(workload)]

    def shutdown(self, timeout: float = 10.0) -> list[SessionEnd]:
        """Closes every session and refuses new ones: the agent is stopping."""
        with self._lock:
            self._stopping = True
            ids = list(self._sessions)
        ends = []
        for session_id in ids:
            with contextlib.suppress(SessionNotFound):
                ends.append(self.close(session_id, timeout=timeout, reason=EndReason.SHUTDOWN))
        return ends

    def wait(self, session_id: str, timeout: float | None = None) -> SessionEnd | None:
        """How the session ended, once it has; None if it still runs after ``timeout``."""
        with self._lock:
            ended = self._ended.get(session_id)
            s = self._sessions.get(session_id)
        if ended is not None:
            return ended
        if s is None:
            raise SessionNotFound(f"no terminal session {session_id}")
        s.ended.wait(timeout)
        return s.end

    # --- reading -----------------------------------------------------------------------------

    def info(self, session_id: str) -> SessionInfo:
        return self._info(self._live(session_id))

    def sessions(self, workload: WorkloadHandle | None = None) -> list[SessionInfo]:
        with self._lock:
            live = [s for s in self._sessions.values()
                    if workload is None or s.workload == workload]
        return [self._info(s) for s in live]

    def ended(self, session_id: str) -> SessionEnd | None:
        with self._lock:
            return self._ended.get(session_id)

    def purge_recordings(self, older_than_days: float) -> list[Path]:
        """The retention rule: deletes recordings last written more than ``older_than_days``
        ago, never one a live session is writing."""
        with self._lock:
            writing = [s.recorder.path for s in self._sessions.values()]
        return purge_recordings(self.recordings_dir, older_than_days=older_than_days,
                                keep=writing)

    def _live(self, session_id: str) -> _Session:
        with self._lock:
            s = self._sessions.get(session_id)
            ended = self._ended.get(session_id)
        if s is None:
            if ended is not None:
                raise SessionGone(f"terminal session {session_id} has ended ({ended.reason})",
                                  ended)
            raise SessionNotFound(f"no terminal session {session_id}")
        return s

    def _info(self, s: _Session) -> SessionInfo:
        with s.lock:
            state = (SessionState.CLOSED if s.end is not None else
                     SessionState.ATTACHED if s.sink is not None else SessionState.DETACHED)
            return SessionInfo(
                s.session_id, s.workload, state, s.cols, s.rows, s.buffer.end, s.buffer.start,
                s.record_input, s.command, s.opened_at, s.detached_at, s.recorder.path)

    # --- one command -------------------------------------------------------------------------

    def exec(self, workload: WorkloadHandle, command: Sequence[str], *,
             timeout: float | None = None, max_output: int = 1 << 20, cols: int = 80,
             rows: int = 24, session_id: str | None = None) -> ExecResult:
        """Runs one command on a terminal, recorded like any session, and returns its exit
        code and output. For output as it comes, open a session with ``command`` and attach
        to it instead."""
        if not command:
            raise ValidationFailed("exec needs a command")
        collector = _Collector(max_output)
        attachment = self.open_attached(workload, collector, session_id=session_id,
                                        command=command, cols=cols, rows=rows)
        end = self.wait(attachment.session_id, timeout)
        if end is None:
            end = self.close(attachment.session_id, reason=EndReason.TIMEOUT)
        return ExecResult(attachment.session_id, end.exit_code, bytes(collector.data),
                          collector.truncated, end)

    # --- the session's thread ------------------------------------------------------------------

    def _pump(self, s: _Session) -> None:
        reason = EndReason.FAILED
        try:
            reason = self._run(s)
        except Exception:
            log.exception("terminal session %s failed", s.session_id)
        finally:
            self._finish(s, reason)

    def _run(self, s: _Session) -> EndReason:
        policy = self.policy
        while True:
            with s.lock:
                if s.close_reason is not None:
                    return s.close_reason
                now = self.clock()
                if (policy.idle_timeout is not None
                        and now - s.last_activity >= policy.idle_timeout):
                    return EndReason.IDLE
                if (s.detached_since is not None
                        and now - s.detached_since >= policy.reattach_window):
                    return EndReason.ABANDONED
                if (s.sink is not None and policy.keepalive_timeout is not None
                        and now - s.last_keepalive >= policy.keepalive_timeout):
                    self._detach_locked(s, DetachReason.KEEPALIVE_LOST)
            data = s.exec.read(_READ_SIZE, timeout=_TICK)
            if data is None:
                continue
            if not data:
                return EndReason.EXITED
            with s.lock:
                s.recorder.output(data)
                offset = s.buffer.append(data)
                s.last_activity = self.clock()
                if s.sink is not None:
                    _notify(s.sink.output, offset, data)

    def _finish(self, s: _Session, reason: EndReason) -> None:
        exit_code = s.exec.wait(5.0) if reason is EndReason.EXITED else None
        try:
            s.exec.close()  # hangs up: the shell and its jobs end
        except Exception:
            log.exception("terminal session %s: closing its terminal failed", s.session_id)
        # What the shell printed between the last read and the hang-up is lost with the
        # terminal; the recording and the buffer hold everything that was read.
        digest: RecordingDigest | None = None
        try:
            digest = s.recorder.close()
        except OSError:
            log.exception("terminal session %s: its recording could not be finished",
                          s.session_id)
        with s.lock:
            end = SessionEnd(s.session_id, s.workload, reason, exit_code, s.buffer.end,
                             s.opened_at, datetime.now(UTC), digest)
            s.end = end
            sink, s.sink = s.sink, None
            if sink is not None:
                _notify(sink.ended, end)
        with self._lock:
            self._sessions.pop(s.session_id, None)
            self._ended[s.session_id] = end
            while len(self._ended) > _ENDED_REMEMBERED:
                self._ended.popitem(last=False)
        s.ended.set()
        if self._on_end is not None:
            try:
                self._on_end(end)
            except Exception:
                log.exception("terminal session %s: the on_end callback failed", s.session_id)


def _notify(callback: Callable[..., None], *args: object) -> None:
    """A sink's failure is the client's problem, never the session's."""
    try:
        callback(*args)
    except Exception:
        log.exception("a terminal sink failed")


class _Collector:
    """The sink of a one-shot exec: keeps the first ``limit`` bytes."""

    def __init__(self, limit: int):
        self.limit = limit
        self.data = bytearray()
        self.truncated = False

    def output(self, offset: int, data: bytes) -> None:
        room = self.limit - len(self.data)
        if len(data) > room:
            self.truncated = True
        self.data += data[:max(0, room)]

    def detached(self, reason: DetachReason) -> None:
        pass

    def ended(self, end: SessionEnd) -> None:
        pass


@dataclass(frozen=True)
class SinkEvent:
    """One thing a :class:`QueueSink` received: output, a detach or the end."""

    offset: int | None = None
    data: bytes = b""
    detached: DetachReason | None = None
    end: SessionEnd | None = None


class QueueSink:
    """A sink that queues what it receives, for a thread that relays it (and for tests)."""

    def __init__(self) -> None:
        self.events: queue.SimpleQueue[SinkEvent] = queue.SimpleQueue()

    def output(self, offset: int, data: bytes) -> None:
        self.events.put(SinkEvent(offset=offset, data=data))

    def detached(self, reason: DetachReason) -> None:
        self.events.put(SinkEvent(detached=reason))

    def ended(self, end: SessionEnd) -> None:
        self.events.put(SinkEvent(end=end))

    def get(self, timeout: float | None = None) -> SinkEvent | None:
        try:
            return self.events.get(timeout=timeout)
        except queue.Empty:
            return None



class AsyncQueueSink:
    """A sink for asyncio code (a WebSocket handler, the agent's link): what it receives
    lands in an ``asyncio.Queue`` on ``loop``. The keeper's own calls block (a close waits
    for the shell to end, an exec for its command), so call them through
    ``asyncio.to_thread``; ``write``, ``resize`` and ``keepalive`` return at once unless the
    program has stopped reading its input."""

    def __init__(self, loop: asyncio.AbstractEventLoop | None = None):
        self.loop = loop or asyncio.get_running_loop()
        self.events: asyncio.Queue[SinkEvent] = asyncio.Queue()

    def _put(self, event: SinkEvent) -> None:
        self.loop.call_soon_threadsafe(self.events.put_nowait, event)

    def output(self, offset: int, data: bytes) -> None:
        self._put(SinkEvent(offset=offset, data=data))

    def detached(self, reason: DetachReason) -> None:
        self._put(SinkEvent(detached=reason))

    def ended(self, end: SessionEnd) -> None:
        self._put(SinkEvent(end=end))

    async def get(self) -> SinkEvent:
        return await self.events.get()
