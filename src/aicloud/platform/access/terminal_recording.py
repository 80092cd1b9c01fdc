"""Terminal recordings in asciicast v2, from the node that writes them to the auditor who
replays them.

A recording is one file per session, ``<session id>.cast``: a JSON header line
(``version``, ``width``, ``height``, ``timestamp``, ``env``) then one JSON array per event,
``[seconds since the start, code, data]`` with code ``"o"`` (output), ``"i"`` (input, only
when input recording is on) or ``"r"`` (resize, data ``"COLSxROWS"``). It is written as the
session runs (a crash keeps everything up to the last event) and its SHA-256 and size are
computed over exactly the bytes written, so the digest is known the moment the session ends
without reading the file back. The digest is the recording's identity: whoever stores it
beside the audit event that opened the session can later prove the file was not altered.
``<session id>.cast.sha256`` beside the file (``sha256sum -c`` format) is a convenience for
reading a recording on its own; it proves nothing, since whoever can edit the file can edit it.

asciicast carries text, so bytes are decoded as UTF-8 incrementally (a character split across
two reads stays whole); bytes that are not UTF-8 are recorded as U+FFFD.
"""

from __future__ import annotations

import codecs
import contextlib
import hashlib
import json
import math
import os
import re
import threading
import time
from collections.abc import Callable, Collection, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

VERSION = 2
SUFFIX = ".cast"
DIGEST_SUFFIX = ".cast.sha256"
_EVENT_CODES = frozenset({"o", "i", "r", "m"})  # "m": a marker, which asciicast v2 allows
_SIZE = re.compile(r"^[1-9][0-9]{0,4}x[1-9][0-9]{0,4}$")
_CHUNK = 1 << 16


@dataclass(frozen=True)
class RecordingDigest:
    """A finished recording: where it is, and what proves it unaltered."""

    path: Path
    sha256: str
    size: int


class RecordingWriter:
    """Appends one session's events as they happen. Thread-safe: output, input and resizes
    arrive from different threads."""

    def __init__(self, path: Path, *, width: int, height: int, started_at: datetime,
                 env: Mapping[str, str], title: str | None = None,
                 command: str | None = None, clock: Callable[[], float] = time.monotonic):
        header: dict[str, Any] = {"version": VERSION, "width": width, "height": height,
                                  "timestamp": int(started_at.timestamp()), "env": dict(env)}
        if title:
            header["title"] = title
        if command:
            header["command"] = command
        # O_EXCL: a session id is used once; a second writer would interleave two sessions.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        self._file = open(fd, "wb")  # noqa: SIM115 - closed by close()
        self.path = path
        self._clock = clock
        self._start = clock()
        self._hash = hashlib.sha256()
        self._size = 0
        self._lock = threading.Lock()
        self._decoders = {code: codecs.getincrementaldecoder("utf-8")("replace")
                          for code in ("o", "i")}
        self._digest: RecordingDigest | None = None
        self._write_line(header)

    def _write_line(self, value: object) -> None:
        line = json.dumps(value, ensure_ascii=False).encode() + b"\n"
        self._file.write(line)
        # Flushed per event: what the session did is on disk even if the node dies next.
        self._file.flush()
        self._hash.update(line)
        self._size += len(line)

    def _event(self, code: str, data: str) -> None:
        with self._lock:
            if self._digest is not None:
                return  # the session is over; late input is not part of it
            elapsed = max(0.0, self._clock() - self._start)
            self._write_line([round(elapsed, 6), code, data])

    def output(self, data: bytes) -> None:
        text = self._decoders["o"].decode(data)
        if text:
            self._event("o", text)

    def input(self, data: bytes) -> None:
        text = self._decoders["i"].decode(data)
        if text:
            self._event("i", text)

    def resize(self, cols: int, rows: int) -> None:
        self._event("r", f"{cols}x{rows}")

    def close(self) -> RecordingDigest:
        """Ends the file and returns its digest (the same one on every call)."""
        with self._lock:
            if self._digest is None:
                for code, decoder in self._decoders.items():
                    rest = decoder.decode(b"", final=True)  # a character cut off at the end
                    if rest:
                        self._write_line([round(max(0.0, self._clock() - self._start), 6),
                                          code, rest])
                os.fsync(self._file.fileno())
                self._file.close()
                self._digest = RecordingDigest(self.path, self._hash.hexdigest(), self._size)
                digest_file = self.path.with_name(self.path.name + ".sha256")
                with contextlib.suppress(OSError):  # a convenience only; see the module doc
                    digest_file.write_text(f"{self._digest.sha256}  {self.path.name}\n")
            return self._digest


# --- reading and replaying ------------------------------------------------------------------


class RecordingInvalid(ValueError):
    """The file is not the recording it claims to be: altered, truncated or not asciicast v2."""


@dataclass(frozen=True)
class Event:
    time: float
    code: str
    data: str


@dataclass(frozen=True)
class Recording:
    header: dict[str, Any]
    events: tuple[Event, ...]
    digest: RecordingDigest

    @property
    def width(self) -> int:
        return int(self.header["width"])

    @property
    def height(self) -> int:
        return int(self.header["height"])

    @property
    def duration(self) -> float:
        return self.events[-1].time if self.events else 0.0

    def output(self) -> str:
        """Everything the session printed, in order: the plain replay."""
        return "".join(e.data for e in self.events if e.code == "o")

    def input(self) -> str:
        return "".join(e.data for e in self.events if e.code == "i")


def file_digest(path: Path) -> RecordingDigest:
    h, size = hashlib.sha256(), 0
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
            size += len(chunk)
    return RecordingDigest(path, h.hexdigest(), size)


def sidecar_digest(path: Path) -> str | None:
    """The digest written beside the recording, if any (unauthenticated; see module doc)."""
    try:
        text = path.with_name(path.name + ".sha256").read_text()
    except OSError:
        return None
    digest = text.split()[0] if text.split() else ""
    return digest if re.fullmatch(r"[0-9a-f]{64}", digest) else None


def read_recording(path: Path, *, sha256: str | None, size: int | None = None) -> Recording:
    """Reads and checks a recording. With ``sha256`` (the digest recorded when the session
    ended) the file must match it byte for byte; then every line must be asciicast v2."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise RecordingInvalid(f"{path}: cannot read it ({exc.strerror or exc})") from exc
    digest = RecordingDigest(path, hashlib.sha256(raw).hexdigest(), len(raw))
    if sha256 is not None and digest.sha256 != sha256.lower():
        raise RecordingInvalid(f"{path}: SHA-256 {digest.sha256} does not match the recorded "
                               f"{sha256.lower()}: the file was altered or replaced")
    if size is not None and digest.size != size:
        raise RecordingInvalid(f"{path}: {digest.size} bytes, the recording had {size}")
    if raw and not raw.endswith(b"\n"):
        raise RecordingInvalid(f"{path}: the last line is cut off (truncated file)")
    try:
        lines = raw.decode("utf-8", errors="strict").split("\n")[:-1]
    except UnicodeDecodeError as exc:
        raise RecordingInvalid(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})"
                               ) from exc
    if not lines:
        raise RecordingInvalid(f"{path}: empty file, no asciicast header")
    header = _json_line(path, 1, lines[0])
    if not isinstance(header, dict) or header.get("version") != VERSION:
        raise RecordingInvalid(f"{path}: line 1 is not an asciicast v2 header")
    for key in ("width", "height"):
        value = header.get(key)
        if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
            raise RecordingInvalid(f"{path}: header {key} must be a positive integer")
    events = []
    last = 0.0
    for number, line in enumerate(lines[1:], start=2):
        value = _json_line(path, number, line)
        if not (isinstance(value, list) and len(value) == 3):
            raise RecordingInvalid(f"{path}: line {number} is not an [time, code, data] event")
        at, code, data = value
        if (not isinstance(at, int | float) or isinstance(at, bool) or not math.isfinite(at)
                or at < last):
            raise RecordingInvalid(f"{path}: line {number}: time {at!r} is not a number at or "
                                   f"after the previous event's {last}")
        if code not in _EVENT_CODES or not isinstance(data, str):
            raise RecordingInvalid(f"{path}: line {number}: unknown event {code!r}")
        if code == "r" and not _SIZE.match(data):
            raise RecordingInvalid(f"{path}: line {number}: resize {data!r} is not COLSxROWS")
        last = float(at)
        events.append(Event(last, code, data))
    return Recording(header, tuple(events), digest)


def _json_line(path: Path, number: int, line: str) -> Any:
    try:
        return json.loads(line, parse_constant=_refuse_constant)
    except ValueError as exc:
        raise RecordingInvalid(f"{path}: line {number} is not JSON ({exc})") from exc


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def replay(recording: Recording, write: Callable[[str], None], *, speed: float = 1.0,
           max_wait: float | None = None, sleep: Callable[[float], None] = time.sleep) -> None:
    """Writes the output as it happened: each event after the pause that preceded it, divided
    by ``speed``; ``max_wait`` caps a pause (a session idle for an hour replays in seconds)."""
    if not speed > 0:
        raise ValueError("speed must be positive")
    previous = 0.0
    for event in _output_events(recording):
        pause = (event.time - previous) / speed
        if max_wait is not None:
            pause = min(pause, max_wait)
        if pause > 0:
            sleep(pause)
        previous = event.time
        write(event.data)


def _output_events(recording: Recording) -> Iterator[Event]:
    return (e for e in recording.events if e.code == "o")


# --- retention ------------------------------------------------------------------------------


def purge_recordings(directory: Path, *, older_than_days: float, now: float | None = None,
                     keep: Collection[Path] = ()) -> list[Path]:
    """Deletes recordings (and their digest files) last written more than ``older_than_days``
    ago; ``keep`` names recordings still being written. Returns what it deleted."""
    if older_than_days < 0:
        raise ValueError("older_than_days cannot be negative")
    cutoff = (time.time() if now is None else now) - older_than_days * 86400
    kept = {Path(p).resolve() for p in keep}
    deleted = []
    for path in sorted(directory.glob(f"*{SUFFIX}")):
        try:
            info = path.lstat()
        except FileNotFoundError:
            continue
        if not path.is_file() or path.is_symlink() or path.resolve() in kept:
            continue
        if info.st_mtime < cutoff:
            path.unlink(missing_ok=True)
            path.with_name(path.name + ".sha256").unlink(missing_ok=True)
            deleted.append(path)
    return deleted
