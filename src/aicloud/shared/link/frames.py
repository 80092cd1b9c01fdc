"""The link's frames.

Text frames are JSON objects, one of:

- a request ``{"id": n, "op": "name", "args": {...}}`` (either side may send one);
- its answer ``{"id": n, "ok": true, "result": ...}`` or
  ``{"id": n, "ok": false, "error": {"type", "detail", "temporary"}}``;
- a one-way notice ``{"push": "name", "args": {...}}``.

Binary frames carry byte streams: a channel id (4 bytes, big endian) then the payload.
Anything else is a protocol error and closes the link: a peer that sends garbage, or frames
above the limits, is not worth keeping.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from typing import Any

MAX_TEXT_FRAME = 1 << 20  # 1 MiB of JSON
MAX_CHUNK = 32 * 1024  # payload bytes per binary frame
MAX_BINARY_FRAME = 4 + MAX_CHUNK
MAX_OP = 64

# WebSocket close codes (4000-4999 are the application's).
CLOSE_PROTOCOL = 1002  # a frame that is not one of the above
CLOSE_TOO_BIG = 1009
CLOSE_REFUSED = 4401  # bad, unknown or revoked credential: do not retry with it
CLOSE_REPLACED = 4409  # a newer link of the same peer took over (fencing)


class FrameError(ValueError):
    """A frame that breaks the protocol (the link is closed with CLOSE_PROTOCOL)."""


@dataclass(frozen=True)
class Request:
    id: int
    op: str
    args: dict[str, Any]


@dataclass(frozen=True)
class Answer:
    id: int
    ok: bool
    result: Any = None
    error: dict[str, Any] | None = None


@dataclass(frozen=True)
class Push:
    name: str
    args: dict[str, Any]


Message = Request | Answer | Push


def encode(message: Message) -> str:
    if isinstance(message, Request):
        data: dict[str, Any] = {"id": message.id, "op": message.op, "args": message.args}
    elif isinstance(message, Push):
        data = {"push": message.name, "args": message.args}
    elif message.ok:
        data = {"id": message.id, "ok": True, "result": message.result}
    else:
        data = {"id": message.id, "ok": False, "error": message.error}
    text = json.dumps(data, separators=(",", ":"), allow_nan=False)
    if len(text) > MAX_TEXT_FRAME:
        raise FrameError(f"message of {len(text)} bytes is over the {MAX_TEXT_FRAME} limit")
    return text


def _reject_constant(name: str) -> Any:
    raise FrameError(f"{name} is not JSON")


def decode(text: str) -> Message:
    if len(text) > MAX_TEXT_FRAME:
        raise FrameError(f"text frame over {MAX_TEXT_FRAME} bytes")
    try:
        data = json.loads(text, parse_constant=_reject_constant)
    except (ValueError, RecursionError) as e:
        raise FrameError(f"not JSON: {e}") from None
    if not isinstance(data, dict):
        raise FrameError("a frame is a JSON object")
    args = data.get("args", {})
    if "push" in data:
        name = data["push"]
        if not isinstance(name, str) or not 0 < len(name) <= MAX_OP or not isinstance(args,
                                                                                      dict):
            raise FrameError("a push has a name and args")
        return Push(name, args)
    ident = data.get("id")
    if not isinstance(ident, int) or isinstance(ident, bool) or not 0 < ident < 2**53:
        raise FrameError("a request or answer has a positive integer id")
    if "op" in data:
        op = data["op"]
        if not isinstance(op, str) or not 0 < len(op) <= MAX_OP or not isinstance(args, dict):
            raise FrameError("a request has an op and args")
        return Request(ident, op, args)
    ok = data.get("ok")
    if ok is True:
        return Answer(ident, True, result=data.get("result"))
    error = data.get("error")
    if ok is False and isinstance(error, dict):
        return Answer(ident, False, error=error)
    raise FrameError("an answer has ok and a result or an error")


_HEADER = struct.Struct(">I")


def pack(channel: int, payload: bytes) -> bytes:
    if len(payload) > MAX_CHUNK:
        raise FrameError(f"chunk of {len(payload)} bytes is over {MAX_CHUNK}")
    return _HEADER.pack(channel) + payload


def unpack(frame: bytes) -> tuple[int, bytes]:
    if len(frame) < _HEADER.size:
        raise FrameError("a binary frame starts with a 4-byte channel id")
    if len(frame) > MAX_BINARY_FRAME:
        raise FrameError(f"binary frame over {MAX_BINARY_FRAME} bytes")
    (channel,) = _HEADER.unpack_from(frame)
    return channel, frame[_HEADER.size:]
