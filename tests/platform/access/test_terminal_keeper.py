"""The node's terminal keeper on real PTYs in the real sandbox (the local provider, bwrap).

Markers the shell prints are computed (``$((40+2))-later`` prints ``42-later``) so that the
terminal's echo of the typed line never counts as the output looked for.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import secrets
import stat
import tempfile
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from aicloud.adapters.providers.base import (
    GpuAssignment,
    WorkloadConflict,
    WorkloadHandle,
    WorkloadKind,
    WorkloadSpec,
)
from aicloud.adapters.providers.local import LocalProvider
from aicloud.adapters.providers.local.procfs import is_same_process
from aicloud.platform.access import (
    AsyncQueueSink,
    DetachReason,
    EndReason,
    QueueSink,
    RecordingWriter,
    SessionEnd,
    SessionGone,
    SessionNotFound,
    SessionState,
    SinkEvent,
    TerminalKeeper,
    TerminalPolicy,
    TooManySessions,
    read_recording,
)
from aicloud.shared.config import load_settings
from aicloud.shared.errors import ValidationFailed


@pytest.fixture(scope="module")
def workload(tmp_path_factory: pytest.TempPathFactory
             ) -> Iterator[tuple[LocalProvider, WorkloadHandle]]:
    """One sandboxed shell workload with GPU 3, shared by the tests (sessions are separate)."""
    root = tmp_path_factory.mktemp("terminal")
    # As tests/conftest.py's tmp_path: bwrap mounts the workload's dir as the workload's uid.
    top = Path(tempfile.gettempdir()).resolve()
    for directory in (root, *root.parents):
        if directory == top or not directory.is_relative_to(top):
            break
        directory.chmod(directory.stat().st_mode | stat.S_IXOTH)
    provider = LocalProvider(root / "workloads")
    assert provider.sandbox == "bwrap"
    handle = provider.create(WorkloadSpec("term1", WorkloadKind.SHELL,
                                          GpuAssignment(1, "H100", (3,))))
    provider.start(handle)
    yield provider, handle
    provider.stop(handle, grace_seconds=0.5)


@pytest.fixture
def keeper_for(workload: tuple[LocalProvider, WorkloadHandle],
               tmp_path: Path) -> Iterator[type[TerminalKeeper]]:
    """Makes keepers (each with its own policy) and shuts them all down after the test."""
    made: list[TerminalKeeper] = []

    def make(**policy: object) -> TerminalKeeper:
        keeper = TerminalKeeper(workload[0], tmp_path / f"recordings{len(made)}",
                                policy=TerminalPolicy(**policy))  # type: ignore[arg-type]
        made.append(keeper)
        return keeper

    yield make  # type: ignore[misc]
    for keeper in made:
        keeper.shutdown()


class Reader:
    """Reads a QueueSink, checking that offsets run on without gap or overlap."""

    def __init__(self, sink: QueueSink, start: int = 0):
        self.sink = sink
        self.next = start
        self.data = bytearray()
        self.detached: list[DetachReason] = []
        self.end: SessionEnd | None = None

    def until(self, marker: bytes, timeout: float = 10.0) -> bytes:
        deadline = time.monotonic() + timeout
        while marker not in self.data:
            self._one(deadline, marker)
        return bytes(self.data)

    def until_end(self, timeout: float = 10.0) -> SessionEnd:
        deadline = time.monotonic() + timeout
        while self.end is None:
            self._one(deadline, b"<end>")
        return self.end

    def _one(self, deadline: float, waiting_for: bytes) -> None:
        event = self.sink.get(max(0.0, deadline - time.monotonic()))
        if event is None:
            raise AssertionError(f"no {waiting_for!r} in time; got {bytes(self.data)!r}")
        self._apply(event)

    def settle(self, quiet: float = 0.3) -> None:
        """Takes everything the sink has until it stays quiet for ``quiet`` seconds."""
        while (event := self.sink.get(quiet)) is not None:
            self._apply(event)

    def _apply(self, event: SinkEvent) -> None:
        if event.offset is not None:
            assert event.offset == self.next, (event.offset, self.next)
            self.data += event.data
            self.next += len(event.data)
        if event.detached is not None:
            self.detached.append(event.detached)
        if event.end is not None:
            self.end = event.end


_ESCAPES = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\r")


def lines(data: bytes) -> list[str]:
    """The terminal's lines without CRs and control sequences (bash's bracketed paste)."""
    return _ESCAPES.sub("", data.decode(errors="replace")).split("\n")


def exec_pids(provider: LocalProvider, handle: WorkloadHandle) -> dict[int, int]:
    """Host pid -> start ticks of the provider's open terminals on ``handle``."""
    found = {}
    for record in (provider.root / handle.ref / "execs").glob("*.json"):
        data = json.loads(record.read_text())
        found[int(data["pid"])] = int(data["start_ticks"])
    return found


def processes_with(marker: str) -> list[int]:
    pids = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                cmdline = Path(entry.path, "cmdline").read_bytes()
            except OSError:
                continue
            if marker.encode() in cmdline:
                pids.append(int(entry.name))
    return pids


def eventually(check: object, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.05)


def test_a_shell_lives_across_detach_and_replays_what_was_missed_exactly_once(
    workload: tuple[LocalProvider, WorkloadHandle], keeper_for: type[TerminalKeeper],
) -> None:
    provider, handle = workload
    keeper = keeper_for()
    first = QueueSink()
    attachment = keeper.open_attached(handle, first, cols=80, rows=24)
    session_id = attachment.session_id
    one = Reader(first)

    attachment.write(b"echo $CUDA_VISIBLE_DEVICES; pwd\n")
    out = one.until(b"/workspace\r\n")
    assert "3" in lines(out) and "/workspace" in lines(out)

    attachment.resize(120, 40)
    attachment.write(b"stty size\n")
    assert "40 120" in lines(one.until(b"40 120"))
    assert (keeper.info(session_id).cols, keeper.info(session_id).rows) == (120, 40)

    # Output produced while nobody is attached.
    attachment.write(b"sleep 1; echo $((40+2))-later\n")
    one.until(b"sleep 1; echo $((40+2))-later\r\n")  # the terminal's echo: the line is in
    attachment.detach()
    one.settle()
    assert one.detached == [DetachReason.DETACHED]
    assert keeper.info(session_id).state is SessionState.DETACHED
    with pytest.raises(SessionGone):
        attachment.write(b"echo nope\n")
    seen = one.next
    eventually(lambda: keeper.info(session_id).output_bytes > seen
               and b"42-later" in _held(keeper, session_id))

    second = QueueSink()
    again = keeper.attach(session_id, second, from_offset=seen)
    assert (again.replay.from_offset, again.replay.start, again.replay.lost) == (seen, seen, 0)
    two = Reader(second, start=seen)
    two.until(b"42-later")
    again.write(b"echo $((50+5))-back\n")
    two.until(b"55-back")

    # A second client takes the session over; the first is told and loses its hold.
    third = QueueSink()
    two.settle()
    taken = keeper.attach(session_id, third, from_offset=two.next)
    two.settle()
    assert two.detached == [DetachReason.REPLACED]
    with pytest.raises(SessionGone, match="attached elsewhere"):
        again.write(b"echo nope\n")
    three = Reader(third, start=two.next)
    taken.write(b"echo $((60+6))-last\n")
    three.until(b"66-last")

    end = keeper.close(session_id)
    assert end.reason is EndReason.CLOSED
    assert three.until_end() == end
    seen_all = bytes(one.data + two.data + three.data)
    assert lines(seen_all).count("42-later") == 1  # the missed output, exactly once
    assert end.output_bytes == len(seen_all)

    # The recording holds everything, the detached part included, and verifies.
    assert end.recording is not None
    recording = read_recording(end.recording.path, sha256=end.recording.sha256,
                               size=end.recording.size)
    assert recording.output() == seen_all.decode()
    assert (recording.header["width"], recording.header["height"]) == (80, 24)
    assert recording.header["env"] == {"TERM": "xterm-256color"}
    assert [e.data for e in recording.events if e.code == "r"] == ["120x40"]
    assert not [e for e in recording.events if e.code == "i"]  # input is off by default
    with pytest.raises(SessionGone):
        keeper.attach(session_id, QueueSink())
    assert keeper.close(session_id) == end  # closing again says how it ended
    assert exec_pids(provider, handle) == {}


def _held(keeper: TerminalKeeper, session_id: str) -> bytes:
    """What the buffer holds now, read through a throwaway attach-and-detach."""
    sink = QueueSink()
    keeper.attach(session_id, sink).detach()
    data = b""
    while (event := sink.get(0)) is not None:
        data += event.data
    return data


def test_an_overflowing_buffer_says_how_much_was_lost_and_the_recording_keeps_it(
    workload: tuple[LocalProvider, WorkloadHandle], keeper_for: type[TerminalKeeper],
) -> None:
    _, handle = workload
    keeper = keeper_for(ring_buffer_bytes=4096)
    info = keeper.open(handle, command=["sh", "-c",
                                        "head -c 20000 /dev/zero | tr '\\0' x; echo; "
                                        "echo end-$((2+2)); sleep 30"])
    eventually(lambda: keeper.info(info.session_id).output_bytes >= 20000 + 9)
    sink = QueueSink()
    attachment = keeper.attach(info.session_id, sink, from_offset=0)
    replay = attachment.replay
    assert replay.from_offset == 0 and replay.lost > 0
    assert replay.start == keeper.info(info.session_id).buffer_start
    assert replay.end - replay.start == 4096
    reader = Reader(sink, start=replay.start)
    assert reader.until(b"end-4\r\n").endswith(b"x\r\nend-4\r\n")
    assert len(reader.data) == 4096
    with pytest.raises(ValidationFailed):  # an offset beyond what the session printed
        keeper.attach(info.session_id, QueueSink(), from_offset=replay.end + 1)
    end = keeper.close(info.session_id)
    assert end.recording is not None
    output = read_recording(end.recording.path, sha256=end.recording.sha256).output()
    assert output.count("x") == 20000 and output.endswith("end-4\r\n")


def test_idle_timeout_closes_the_session_and_ends_the_shell_and_its_jobs(
    workload: tuple[LocalProvider, WorkloadHandle], keeper_for: type[TerminalKeeper],
) -> None:
    provider, handle = workload
    keeper = keeper_for(idle_timeout=1.0)
    mark = str(900000 + secrets.randbelow(99999))
    sink = QueueSink()
    attachment = keeper.open_attached(handle, sink)
    shells = exec_pids(provider, handle)
    assert len(shells) == 1
    # A background job in a process group of its own, and a foreground one.
    attachment.write(f"sleep {mark}1 & sleep {mark}2\n".encode())
    eventually(lambda: len(processes_with(f"sleep\0{mark}")) == 2)
    started = time.monotonic()
    end = Reader(sink).until_end(timeout=10)
    assert end.reason is EndReason.IDLE and end.exit_code is None
    assert 0.9 <= time.monotonic() - started <= 5
    assert processes_with(f"sleep\0{mark}") == []
    assert not any(is_same_process(pid, ticks) for pid, ticks in shells.items())
    assert keeper.sessions(handle) == []


def test_reattach_window_closes_a_detached_session_only(
    workload: tuple[LocalProvider, WorkloadHandle], keeper_for: type[TerminalKeeper],
) -> None:
    provider, handle = workload
    keeper = keeper_for(idle_timeout=None, reattach_window=1.0, keepalive_timeout=1.0)
    mark = str(800000 + secrets.randbelow(99999))
    sink = QueueSink()
    attachment = keeper.open_attached(handle, sink)
    shells = exec_pids(provider, handle)
    attachment.write(f"sleep {mark}1 &\n".encode())
    eventually(lambda: len(processes_with(f"sleep\0{mark}")) == 1)
    # Attached and keeping alive: the window does not run.
    for _ in range(10):
        time.sleep(0.2)
        attachment.keepalive()
    assert keeper.info(attachment.session_id).state is SessionState.ATTACHED
    # A client that stops sending keepalives is detached; then the window runs out.
    reader = Reader(sink)
    eventually(lambda: reader.settle(0.05) or reader.detached, timeout=5)
    assert reader.detached == [DetachReason.KEEPALIVE_LOST]
    end = keeper.wait(attachment.session_id, timeout=10)
    assert end is not None and end.reason is EndReason.ABANDONED
    assert processes_with(f"sleep\0{mark}") == []
    assert not any(is_same_process(pid, ticks) for pid, ticks in shells.items())
    with pytest.raises(SessionGone, match="abandoned"):
        keeper.attach(attachment.session_id, QueueSink())


def test_several_sessions_on_one_workload_stay_apart_up_to_the_limit(
    workload: tuple[LocalProvider, WorkloadHandle], keeper_for: type[TerminalKeeper],
) -> None:
    _, handle = workload
    keeper = keeper_for(max_sessions_per_workload=3)
    sinks = [QueueSink() for _ in range(3)]
    attachments = [keeper.open_attached(handle, sink) for sink in sinks]
    with pytest.raises(TooManySessions):
        keeper.open(handle)
    for n, attachment in enumerate(attachments):
        attachment.write(f"echo s-$(({n}*100+7))\n".encode())
    for n, sink in enumerate(sinks):
        out = Reader(sink).until(f"s-{n * 100 + 7}\r\n".encode())
        assert not [m for m in range(3) if m != n and f"s-{m * 100 + 7}" in lines(out)]
    assert {i.session_id for i in keeper.sessions(handle)} == {
        a.session_id for a in attachments}
    ends = keeper.close_workload(handle)
    assert [e.reason for e in ends] == [EndReason.CLOSED] * 3
    keeper.open(handle)  # room again


def test_exec_returns_the_exit_code_and_output(
    workload: tuple[LocalProvider, WorkloadHandle], keeper_for: type[TerminalKeeper],
) -> None:
    _, handle = workload
    keeper = keeper_for()
    ok = keeper.exec(handle, ["sh", "-c", "echo $CUDA_VISIBLE_DEVICES; pwd"], timeout=10)
    assert ok.exit_code == 0 and ok.end.reason is EndReason.EXITED
    assert ok.output == b"3\r\n/workspace\r\n"
    failed = keeper.exec(handle, ["sh", "-c", "echo oops >&2; exit 3"], timeout=10)
    assert (failed.exit_code, failed.output) == (3, b"oops\r\n")
    missing = keeper.exec(handle, ["no-such-command"], timeout=10)
    assert missing.exit_code == 127
    long = keeper.exec(handle, ["sh", "-c", "head -c 5000 /dev/zero | tr '\\0' y"],
                       timeout=10, max_output=1000)
    assert long.output == b"y" * 1000 and long.truncated
    slow = keeper.exec(handle, ["sleep", "30"], timeout=0.5)
    assert slow.exit_code is None and slow.end.reason is EndReason.TIMEOUT
    # Each one is recorded like a session.
    assert failed.end.recording is not None
    recording = read_recording(failed.end.recording.path, sha256=failed.end.recording.sha256)
    assert recording.output() == "oops\r\n"
    assert recording.header["command"] == "sh -c echo oops >&2; exit 3"


def test_input_is_recorded_only_when_asked(
    workload: tuple[LocalProvider, WorkloadHandle], keeper_for: type[TerminalKeeper],
) -> None:
    _, handle = workload
    keeper = keeper_for(record_input=True)
    recorded = {}
    for record_input in (None, False):  # None: the policy's (on)
        sink = QueueSink()
        attachment = keeper.open_attached(handle, sink, record_input=record_input)
        attachment.write(b"echo secret-$((3*3))\n")
        Reader(sink).until(b"secret-9\r\n")
        end = keeper.close(attachment.session_id)
        assert end.recording is not None
        recorded[record_input] = read_recording(end.recording.path,
                                                sha256=end.recording.sha256)
    assert recorded[None].input() == "echo secret-$((3*3))\n"
    assert [e.code for e in recorded[False].events if e.code == "i"] == []
    assert "secret-9" in recorded[False].output()


def test_bad_calls_are_refused_clearly(
    workload: tuple[LocalProvider, WorkloadHandle], keeper_for: type[TerminalKeeper],
) -> None:
    _, handle = workload
    keeper = keeper_for()
    with pytest.raises(SessionNotFound):
        keeper.attach("term_nope", QueueSink())
    with pytest.raises(ValidationFailed):
        keeper.open(handle, session_id="../../etc/passwd")
    with pytest.raises(ValidationFailed):
        keeper.open(handle, cols=0)
    info = keeper.open(handle, session_id="s-fixed")
    with pytest.raises(Exception, match="exists already"):
        keeper.open(handle, session_id="s-fixed")
    attachment = keeper.attach(info.session_id, QueueSink())
    with pytest.raises(ValidationFailed):
        attachment.resize(100_000, 10)
    keeper.shutdown()
    with pytest.raises(SessionGone, match="shutting down"):
        keeper.open(handle)
    assert keeper.ended("s-fixed") is not None
    assert keeper.ended("s-fixed").reason is EndReason.SHUTDOWN  # type: ignore[union-attr]


def test_the_policy_comes_from_the_profiles_terminal_settings(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AICLOUD_TERMINAL__RECORD_INPUT", "true")
    monkeypatch.setenv("AICLOUD_TERMINAL__IDLE_TIMEOUT_SECONDS", "0")
    monkeypatch.setenv("AICLOUD_TERMINAL__REATTACH_WINDOW_SECONDS", "120")
    settings = load_settings("dev")
    policy = TerminalPolicy.from_config(settings.terminal)
    assert (policy.record_input, policy.idle_timeout, policy.reattach_window) == (
        True, None, 120.0)
    assert policy.keepalive_timeout is None and policy.ring_buffer_bytes == 1 << 20
    assert Path(settings.terminal.recordings_dir).is_absolute()


def test_stopping_the_workload_ends_its_sessions_with_complete_recordings(
        tmp_path: Path) -> None:
    provider = LocalProvider(tmp_path / "workloads")
    handle = provider.create(WorkloadSpec("term2", WorkloadKind.SHELL))
    provider.start(handle)
    ended: list[SessionEnd] = []
    keeper = TerminalKeeper(provider, tmp_path / "recordings", on_end=ended.append)
    try:
        sink = QueueSink()
        attachment = keeper.open_attached(handle, sink)
        attachment.write(b"echo $((7*11))-before-stop\n")
        reader = Reader(sink)
        reader.until(b"77-before-stop\r\n")
        provider.stop(handle, grace_seconds=1)  # hangs up every terminal on it
        end = reader.until_end()
        assert end.reason is EndReason.EXITED and ended == [end]
        assert end.recording is not None
        recording = read_recording(end.recording.path, sha256=end.recording.sha256)
        assert recording.output().encode() == bytes(reader.data)
        with pytest.raises(WorkloadConflict):
            keeper.open(handle, session_id="after-stop")
        assert not (tmp_path / "recordings" / "after-stop.cast").exists()
        assert keeper.purge_recordings(older_than_days=0) == [end.recording.path]
    finally:
        keeper.shutdown()


def test_an_asyncio_client_gets_its_output_on_its_loop(
    workload: tuple[LocalProvider, WorkloadHandle], keeper_for: type[TerminalKeeper],
) -> None:
    _, handle = workload
    keeper = keeper_for()

    async def client() -> tuple[bytes, SessionEnd]:
        sink = AsyncQueueSink()
        attachment = await asyncio.to_thread(keeper.open_attached, handle, sink,
                                             command=["sh", "-c", "read x; echo got-$x; exit 4"])
        attachment.write(b"abc\n")
        data, offset = b"", 0
        while True:
            event = await asyncio.wait_for(sink.get(), 10)
            if event.end is not None:
                return data, event.end
            assert event.offset == offset
            data += event.data
            offset += len(event.data)

    data, end = asyncio.run(client())
    assert data == b"abc\r\ngot-abc\r\n"
    assert (end.reason, end.exit_code) == (EndReason.EXITED, 4)


def test_a_new_keeper_finishes_the_recordings_a_dead_one_left(
    workload: tuple[LocalProvider, WorkloadHandle], tmp_path: Path,
) -> None:
    provider, _ = workload
    recordings = tmp_path / "recordings"
    recordings.mkdir()
    # What a keeper killed mid-session leaves: a recording written up to its last event.
    writer = RecordingWriter(recordings / "lost.cast", width=80, height=24,
                             started_at=datetime.now(UTC), env={"TERM": "xterm-256color"})
    writer.output(b"half a session\r\n")
    keeper = TerminalKeeper(provider, recordings)
    try:
        [digest] = keeper.recovered
        assert digest.path == recordings / "lost.cast"
        assert read_recording(digest.path, sha256=digest.sha256).output() == "half a session\r\n"
        assert TerminalKeeper(provider, recordings).recovered == []  # only once
    finally:
        writer.close()
        keeper.shutdown()


def test_concurrent_opens_respect_the_session_limit(
    workload: tuple[LocalProvider, WorkloadHandle], keeper_for: type[TerminalKeeper],
) -> None:
    _, handle = workload
    keeper = keeper_for(max_sessions_per_workload=2)
    results: list[object] = []
    lock = threading.Lock()

    def open_one() -> None:
        try:
            info: object = keeper.open(handle)
        except TooManySessions as exc:
            info = exc
        with lock:
            results.append(info)

    threads = [threading.Thread(target=open_one) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(isinstance(r, TooManySessions) for r in results) == 4
    assert len(keeper.sessions(handle)) == 2
