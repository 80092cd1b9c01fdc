"""One end of a link: RPC with ids in both directions, one-way notices, and byte channels.

A :class:`Peer` runs over any :class:`Transport` (the server's WebSocket, the agent's
``websockets`` client). Incoming requests are handled concurrently (a slow op never holds
the link; at most ``max_inflight`` at once, the rest wait their turn); an answer carries
the result or an error ``{type, detail, temporary}``.

Channels: ``open_channel(kind, args)`` sends the ``channel.open`` request with an id the
opener picks (odd on the side that connected, even on the other), the other side's
``on_channel`` accepts it. Each direction of a channel has a credit window: a sender never
has more than ``WINDOW`` bytes unread at the receiver, which returns credit
(``channel.credit`` notices) as its reader consumes. A slow reader so stalls its own
channel only, never the link. ``channel.close`` ends one direction; the reader sees EOF
after the data already sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from aicloud.shared.link.frames import (
    CLOSE_PROTOCOL,
    MAX_CHUNK,
    Answer,
    FrameError,
    Push,
    Request,
    decode,
    encode,
    pack,
    unpack,
)

log = logging.getLogger(__name__)

WINDOW = 256 * 1024


class Transport(Protocol):
    async def send_text(self, data: str) -> None: ...

    async def send_bytes(self, data: bytes) -> None: ...

    async def receive(self) -> str | bytes:
        """The next frame; raises LinkClosed when the link is gone."""
        ...

    async def close(self, code: int, reason: str) -> None: ...


class LinkClosed(ConnectionError):
    """The link is gone (an op in flight may or may not have been applied)."""


class RemoteError(Exception):
    """The other side answered with an error."""

    def __init__(self, type_: str, detail: str, temporary: bool):
        super().__init__(f"{type_}: {detail}")
        self.type, self.detail, self.temporary = type_, detail, temporary


class OpError(Exception):
    """Raise from a handler to answer with this error type (``temporary``: worth a retry)."""

    def __init__(self, type_: str, detail: str, *, temporary: bool = False):
        super().__init__(detail)
        self.type, self.detail, self.temporary = type_, detail, temporary


Handler = Callable[[str, dict[str, Any]], Awaitable[Any]]
PushHandler = Callable[[str, dict[str, Any]], Awaitable[None]]
ChannelHandler = Callable[["Channel", str, dict[str, Any]], Awaitable[None]]


class Channel:
    """A bidirectional byte stream inside the link."""

    def __init__(self, peer: Peer, channel_id: int):
        self.peer, self.id = peer, channel_id
        self._inbox: asyncio.Queue[bytes | None] = asyncio.Queue()
        self._buffered = 0  # bytes received and not yet read
        self._unacked = 0  # bytes read and not yet returned as credit
        self._credit = WINDOW
        self._credit_changed = asyncio.Event()
        self.closed_local = self.closed_remote = False

    async def write(self, data: bytes) -> None:
        """Send ``data``, waiting for credit when the reader is behind."""
        view = memoryview(data)
        while view:
            if self.closed_local or self.peer.closed:
                raise LinkClosed(f"channel {self.id} is closed")
            while self._credit <= 0:
                self._credit_changed.clear()
                await self._credit_changed.wait()
                if self.closed_remote or self.peer.closed:
                    raise LinkClosed(f"channel {self.id} was closed by the other side")
            n = min(len(view), MAX_CHUNK, self._credit)
            self._credit -= n
            await self.peer._send_bytes(pack(self.id, bytes(view[:n])))
            view = view[n:]

    async def read(self) -> bytes:
        """The next chunk; b"" at the end of the stream."""
        chunk = await self._inbox.get()
        if chunk is None:
            self._inbox.put_nowait(None)  # EOF stays EOF
            return b""
        self._buffered -= len(chunk)
        self._unacked += len(chunk)
        if self._unacked >= WINDOW // 4 and not self.peer.closed:
            grant, self._unacked = self._unacked, 0
            await self.peer.push("channel.credit", {"channel": self.id, "bytes": grant})
        return chunk

    async def close(self) -> None:
        """No more writes from this side (idempotent)."""
        if not self.closed_local:
            self.closed_local = True
            if not self.peer.closed:
                with contextlib.suppress(LinkClosed):
                    await self.peer.push("channel.close", {"channel": self.id})
            self._maybe_forget()

    # --- called by the peer -------------------------------------------------------------

    def _received(self, payload: bytes) -> None:
        self._buffered += len(payload)
        if self._buffered > WINDOW:
            raise FrameError(f"channel {self.id}: the sender ignored its credit window")
        self._inbox.put_nowait(payload)

    def _granted(self, n: int) -> None:
        self._credit += n
        self._credit_changed.set()

    def _remote_closed(self) -> None:
        self.closed_remote = True
        self._inbox.put_nowait(None)
        self._credit_changed.set()
        self._maybe_forget()

    def _maybe_forget(self) -> None:
        if self.closed_local and self.closed_remote:
            self.peer._channels.pop(self.id, None)


class Peer:
    def __init__(self, transport: Transport, *, handler: Handler | None = None,
                 on_push: PushHandler | None = None, on_channel: ChannelHandler | None = None,
                 initiator: bool, max_inflight: int = 32, name: str = "link"):
        self.transport = transport
        self.handler, self.on_push, self.on_channel = handler, on_push, on_channel
        self.name = name
        self._ids = itertools.count(1)
        self._channel_ids = itertools.count(1 if initiator else 2, 2)
        self._waiting: dict[int, asyncio.Future[Any]] = {}
        self._channels: dict[int, Channel] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._inflight = asyncio.Semaphore(max_inflight)
        self._send_lock = asyncio.Lock()
        self.closed = False
        self.close_reason = ""

    # --- sending ------------------------------------------------------------------------

    async def _send_text(self, text: str) -> None:
        if self.closed:
            raise LinkClosed(f"{self.name} is closed")
        async with self._send_lock:
            await self.transport.send_text(text)

    async def _send_bytes(self, data: bytes) -> None:
        if self.closed:
            raise LinkClosed(f"{self.name} is closed")
        async with self._send_lock:
            await self.transport.send_bytes(data)

    async def call(self, op: str, args: dict[str, Any] | None = None, *,
                   timeout: float = 30.0) -> Any:
        """Ask the other side; its result, or RemoteError / LinkClosed / TimeoutError."""
        ident = next(self._ids)
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._waiting[ident] = future
        try:
            await self._send_text(encode(Request(ident, op, args or {})))
            return await asyncio.wait_for(future, timeout)
        finally:
            self._waiting.pop(ident, None)

    async def push(self, name: str, args: dict[str, Any] | None = None) -> None:
        await self._send_text(encode(Push(name, args or {})))

    async def open_channel(self, kind: str, args: dict[str, Any] | None = None, *,
                           timeout: float = 30.0) -> Channel:
        channel = Channel(self, next(self._channel_ids))
        self._channels[channel.id] = channel
        try:
            await self.call("channel.open", {"channel": channel.id, "kind": kind,
                                             "args": args or {}}, timeout=timeout)
        except BaseException:
            self._channels.pop(channel.id, None)
            raise
        return channel

    # --- receiving ----------------------------------------------------------------------

    async def run(self) -> None:
        """Read frames until the link closes; a protocol error closes it."""
        try:
            while True:
                frame = await self.transport.receive()
                if isinstance(frame, bytes):
                    channel_id, payload = unpack(frame)
                    channel = self._channels.get(channel_id)
                    if channel is None or channel.closed_remote:
                        continue  # closed meanwhile: late data is dropped
                    channel._received(payload)
                    continue
                await self._dispatch(decode(frame))
        except FrameError as e:
            log.warning("%s: protocol error, closing: %s", self.name, e)
            await self.close(CLOSE_PROTOCOL, str(e)[:120])
        except LinkClosed:
            pass
        finally:
            self._lost()

    async def _dispatch(self, message: Request | Answer | Push) -> None:
        if isinstance(message, Answer):
            future = self._waiting.get(message.id)
            if future is not None and not future.done():
                if message.ok:
                    future.set_result(message.result)
                else:
                    err = message.error or {}
                    future.set_exception(RemoteError(str(err.get("type", "error")),
                                                     str(err.get("detail", "")),
                                                     bool(err.get("temporary", False))))
        elif isinstance(message, Push):
            await self._on_push(message)
        else:
            await self._inflight.acquire()
            task = asyncio.create_task(self._answer(message))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _on_push(self, message: Push) -> None:
        if message.name in ("channel.credit", "channel.close"):
            ident = message.args.get("channel")
            channel = self._channels.get(ident) if isinstance(ident, int) else None
            if channel is None:
                return
            if message.name == "channel.close":
                channel._remote_closed()
            else:
                n = message.args.get("bytes")
                if not isinstance(n, int) or not 0 < n <= 1 << 30:
                    raise FrameError("channel.credit needs a positive byte count")
                channel._granted(n)
        elif self.on_push is not None:
            await self.on_push(message.name, message.args)

    async def _answer(self, request: Request) -> None:
        try:
            try:
                if request.op == "channel.open":
                    result = await self._accept_channel(request.args)
                elif self.handler is None:
                    raise OpError("unknown-op", f"no operations on this side ({request.op})")
                else:
                    result = await self.handler(request.op, request.args)
                answer = Answer(request.id, True, result=result)
            except OpError as e:
                answer = Answer(request.id, False, error={"type": e.type, "detail": e.detail,
                                                          "temporary": e.temporary})
            except Exception as e:  # a bug or an outage on this side: worth a retry
                log.exception("%s: op %s failed", self.name, request.op)
                answer = Answer(request.id, False, error={
                    "type": type(e).__name__, "detail": str(e)[:500], "temporary": True})
            with contextlib.suppress(LinkClosed):
                await self._send_text(encode(answer))
        finally:
            self._inflight.release()

    async def _accept_channel(self, args: dict[str, Any]) -> dict[str, Any]:
        ident, kind, sub = args.get("channel"), args.get("kind"), args.get("args", {})
        if (not isinstance(ident, int) or ident in self._channels or not isinstance(kind, str)
                or not isinstance(sub, dict)):
            raise OpError("bad-request", "channel.open needs a new channel id, a kind, args")
        if self.on_channel is None:
            raise OpError("unknown-op", "this side opens no channels")
        channel = Channel(self, ident)
        self._channels[ident] = channel
        task = asyncio.create_task(self._serve_channel(channel, kind, sub))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return {"channel": ident}

    async def _serve_channel(self, channel: Channel, kind: str, args: dict[str, Any]) -> None:
        assert self.on_channel is not None
        try:
            await self.on_channel(channel, kind, args)
        except LinkClosed:
            pass
        except Exception:
            log.exception("%s: channel %d (%s) failed", self.name, channel.id, kind)
        finally:
            await channel.close()

    async def close(self, code: int = 1000, reason: str = "") -> None:
        if not self.closed:
            self.close_reason = reason
            with contextlib.suppress(Exception):
                await self.transport.close(code, reason)
        self._lost()

    def _lost(self) -> None:
        """The link is gone: fail every call in flight, end every channel."""
        self.closed = True
        for future in self._waiting.values():
            if not future.done():
                future.set_exception(LinkClosed(f"{self.name} closed"))
        for channel in list(self._channels.values()):
            channel._remote_closed()
        for task in list(self._tasks):
            task.cancel()
