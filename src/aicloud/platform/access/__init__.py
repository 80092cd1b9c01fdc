"""Runtime access: how users reach what they launched (terminals, apps, API endpoints).

Product-neutral; it knows a workload only by the provider's opaque handle.

Public surface (terminals):
- ``TerminalKeeper`` (node side, no database): terminal sessions kept alive across
  detaches, with a ring buffer of output addressed by absolute offset for reattaching,
  idle timeout, reattach window, and an asciicast v2 recording of each session. Driven by
  calls (``open``/``open_attached``, ``attach``, ``Attachment.write/resize/keepalive/
  detach``, ``close``) and ``TerminalSink`` callbacks, so any transport plugs onto it;
  ``exec`` runs one command and returns its exit code and output;
- recordings: ``read_recording`` (checked against the digest recorded when the session
  ended), ``replay`` (timed) and ``Recording.output()`` (plain), ``purge_recordings``
  (retention).
"""

from aicloud.platform.access.terminal_keeper import (
    AsyncQueueSink,
    Attachment,
    DetachReason,
    EndReason,
    ExecResult,
    OutputBuffer,
    QueueSink,
    Replay,
    SessionEnd,
    SessionGone,
    SessionInfo,
    SessionNotFound,
    SessionState,
    SinkEvent,
    TerminalKeeper,
    TerminalPolicy,
    TerminalSink,
    TooManySessions,
)
from aicloud.platform.access.terminal_recording import (
    Event,
    Recording,
    RecordingDigest,
    RecordingInvalid,
    RecordingWriter,
    file_digest,
    purge_recordings,
    read_recording,
    replay,
    sidecar_digest,
)

__all__ = [
    "AsyncQueueSink",
    "Attachment",
    "DetachReason",
    "EndReason",
    "Event",
    "ExecResult",
    "OutputBuffer",
    "QueueSink",
    "Recording",
    "RecordingDigest",
    "RecordingInvalid",
    "RecordingWriter",
    "Replay",
    "SessionEnd",
    "SessionGone",
    "SessionInfo",
    "SessionNotFound",
    "SessionState",
    "SinkEvent",
    "TerminalKeeper",
    "TerminalPolicy",
    "TerminalSink",
    "TooManySessions",
    "file_digest",
    "purge_recordings",
    "read_recording",
    "replay",
    "sidecar_digest",
]
