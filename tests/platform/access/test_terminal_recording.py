"""asciicast v2 recordings: written incrementally with their digest, checked, replayed,
purged; and `aicloud audit replay` on a file."""

from __future__ import annotations

import hashlib
import json
import os
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
from typer.testing import CliRunner

from aicloud.cli.main import app
from aicloud.platform.access import (
    RecordingInvalid,
    RecordingWriter,
    file_digest,
    purge_recordings,
    read_recording,
    replay,
    sidecar_digest,
)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def write_sample(path: Path, clock: Clock | None = None) -> RecordingWriter:
    clock = clock or Clock()
    writer = RecordingWriter(path, width=80, height=24,
                             started_at=datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC),
                             env={"TERM": "xterm-256color"}, title="s1 on w1", clock=clock)
    writer.output(b"$ ")
    clock.now += 0.5
    writer.input(b"ls\r")
    writer.output(b"ls\r\nfile\xc3")  # an \xc3\xa9 (e acute) cut in two by the reads
    clock.now += 1.25
    writer.output(b"\xa9\r\n")
    writer.resize(120, 40)
    clock.now += 3.0
    writer.output(b"done\r\n")
    return writer


def test_a_recording_is_asciicast_v2_with_the_digest_of_what_was_written(
        tmp_path: Path) -> None:
    path = tmp_path / "s1.cast"
    writer = write_sample(path)
    # Written as it goes: the header and events are on disk before the end.
    assert json.loads(path.read_text().splitlines()[0])["version"] == 2
    digest = writer.close()
    assert writer.close() == digest
    raw = path.read_bytes()
    assert (digest.sha256, digest.size) == (hashlib.sha256(raw).hexdigest(), len(raw))
    assert file_digest(path) == digest
    assert sidecar_digest(path) == digest.sha256
    assert oct(path.stat().st_mode & 0o777) == "0o600"

    lines = [json.loads(line) for line in raw.decode().splitlines()]
    assert lines[0] == {"version": 2, "width": 80, "height": 24, "timestamp": 1767323045,
                        "env": {"TERM": "xterm-256color"}, "title": "s1 on w1"}
    assert lines[1:] == [[0.0, "o", "$ "], [0.5, "i", "ls\r"], [0.5, "o", "ls\r\nfile"],
                         [1.75, "o", "\u00e9\r\n"], [1.75, "r", "120x40"],
                         [4.75, "o", "done\r\n"]]

    recording = read_recording(path, sha256=digest.sha256, size=digest.size)
    assert recording.output() == "$ ls\r\nfile\u00e9\r\ndone\r\n"
    assert recording.input() == "ls\r"
    assert (recording.width, recording.height, recording.duration) == (80, 24, 4.75)
    with pytest.raises(FileExistsError):  # one writer per session id
        RecordingWriter(path, width=80, height=24, started_at=datetime.now(UTC), env={})


def test_an_altered_or_truncated_recording_fails_verification(tmp_path: Path) -> None:
    path = tmp_path / "s1.cast"
    digest = write_sample(path).close()
    original = path.read_bytes()

    path.write_bytes(original.replace(b"done", b"DONE"))  # same size, one event rewritten
    with pytest.raises(RecordingInvalid, match="does not match the recorded"):
        read_recording(path, sha256=digest.sha256)

    path.write_bytes(original[:-10])
    with pytest.raises(RecordingInvalid, match="does not match"):
        read_recording(path, sha256=digest.sha256)
    with pytest.raises(RecordingInvalid, match="cut off"):
        read_recording(path, sha256=None)

    path.write_bytes(original)
    with pytest.raises(RecordingInvalid, match="bytes, the recording had"):
        read_recording(path, sha256=digest.sha256, size=digest.size + 1)
    assert read_recording(path, sha256=digest.sha256.upper()).digest == digest


@pytest.mark.parametrize(("content", "problem"), [
    (b"", "empty file"),
    (b'{"version": 1, "width": 80, "height": 24}\n', "not an asciicast v2 header"),
    (b'{"version": 2, "width": 0, "height": 24}\n', "width must be a positive"),
    (b'{"version": 2, "width": 80, "height": 24}\n[1.0, "o"]\n', r"not an \[time, code"),
    (b'{"version": 2, "width": 80, "height": 24}\n[2.0, "o", "a"]\n[1.0, "o", "b"]\n',
     "at or after the previous"),
    (b'{"version": 2, "width": 80, "height": 24}\n[NaN, "o", "a"]\n', "not JSON"),
    (b'{"version": 2, "width": 80, "height": 24}\n[1.0, "x", "a"]\n', "unknown event"),
    (b'{"version": 2, "width": 80, "height": 24}\n[1.0, "r", "big"]\n', "not COLSxROWS"),
    (b'{"version": 2, "width": 80, "height": 24}\n[1.0, "o", "\xff"]\n', "not UTF-8"),
])
def test_what_is_not_asciicast_v2_is_refused(tmp_path: Path, content: bytes,
                                             problem: str) -> None:
    path = tmp_path / "bad.cast"
    path.write_bytes(content)
    with pytest.raises(RecordingInvalid, match=problem):
        read_recording(path, sha256=hashlib.sha256(content).hexdigest())


def test_timed_replay_keeps_the_pauses_divided_by_speed_and_capped(tmp_path: Path) -> None:
    path = tmp_path / "s1.cast"
    digest = write_sample(path).close()
    recording = read_recording(path, sha256=digest.sha256)
    for speed, max_wait, pauses in [(1.0, None, [0.5, 1.25, 3.0]),
                                    (2.0, None, [0.25, 0.625, 1.5]),
                                    (1.0, 1.0, [0.5, 1.0, 1.0])]:
        written: list[str] = []
        slept: list[float] = []
        replay(recording, written.append, speed=speed, max_wait=max_wait, sleep=slept.append)
        assert "".join(written) == recording.output()
        assert slept == pytest.approx(pauses)
    with pytest.raises(ValueError):
        replay(recording, print, speed=0)


def test_retention_deletes_recordings_older_than_the_limit_but_not_live_ones(
        tmp_path: Path) -> None:
    now = time.time()
    ages = {"old": 40, "older-but-live": 60, "recent": 2}
    for name, days in ages.items():
        path = tmp_path / f"{name}.cast"
        write_sample(path).close()
        when = now - days * 86400
        os.utime(path, (when, when))
    (tmp_path / "notes.txt").write_text("not a recording")
    deleted = purge_recordings(tmp_path, older_than_days=30, now=now,
                               keep=[tmp_path / "older-but-live.cast"])
    assert deleted == [tmp_path / "old.cast"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "notes.txt", "older-but-live.cast", "older-but-live.cast.sha256", "recent.cast",
        "recent.cast.sha256"]
    with pytest.raises(ValueError):
        purge_recordings(tmp_path, older_than_days=-1)


def test_audit_replay_checks_the_file_and_prints_the_session(tmp_path: Path) -> None:
    path = tmp_path / "s1.cast"
    digest = write_sample(path).close()
    runner = CliRunner()
    printed = "$ ls\nfile\u00e9\ndone\n"  # click's result turns CRLF into LF

    result = runner.invoke(app, ["audit", "replay", str(path), "--sha256", digest.sha256,
                                 "--plain"])
    assert result.exit_code == 0, result.output
    assert result.stdout == printed

    result = runner.invoke(app, ["audit", "replay", str(path), "--speed", "1000", "-o", "json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["sha256"] == digest.sha256 and data["verified_against"] == "digest file"
    assert data["events"] == {"o": 4, "i": 1, "r": 1} and data["duration_seconds"] == 4.75

    result = runner.invoke(app, ["audit", "replay", str(path), "--speed", "1000"])
    assert result.exit_code == 0 and result.stdout == printed

    path.write_bytes(path.read_bytes().replace(b"done", b"DONE"))
    result = runner.invoke(app, ["audit", "replay", str(path), "--sha256", digest.sha256])
    assert result.exit_code == 1 and "altered" in result.output
    assert "DONE" not in result.stdout

    (tmp_path / "s1.cast.sha256").unlink()
    result = runner.invoke(app, ["audit", "replay", str(path)])
    assert result.exit_code == 2 and "--sha256" in result.output
