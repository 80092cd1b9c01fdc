"""HTTP/1.1 and WebSocket clients over a ``ByteStream`` (any transport: TCP or a node link).

h11 (HTTP) and websockets' sans-I/O protocol (WebSocket) parse and frame; this module only
moves their bytes through the stream, so the proxy works the same over the direct transport
and over the node link. Connections to one resource are kept alive and reused (a pool per
resource endpoint), as a browser or a load balancer would.

Limits: an upstream response head over MAX_RESPONSE_HEAD bytes is a protocol error (502);
the head must arrive within ``response_timeout`` (504); bodies are streamed in both
directions, chunk by chunk, never held whole.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import h11
from websockets.client import ClientProtocol
from websockets.frames import Frame, Opcode
from websockets.http11 import Response as WsResponse
from websockets.protocol import State
from websockets.uri import parse_uri

from aicloud.platform.access.upstream import (
    SERVING_PORT,
    ByteStream,
    NodeStreams,
    StreamTimeout,
    StreamUnavailable,
)

MAX_RESPONSE_HEAD = 64 * 1024
READ_SIZE = 65536
Headers = list[tuple[bytes, bytes]]


class UpstreamError(Exception):
    """The upstream broke the exchange (reset, protocol error): answered 502."""


class UpstreamTimeout(UpstreamError):
    """The upstream did not answer in time: answered 504."""


@dataclass(frozen=True)
class StreamTarget:
    """Where a resource serves: what a NodeStreams needs to open a stream to it."""

    node_id: str | None
    resource_type: str
    resource_id: str
    endpoint: str | None

    def args(self) -> dict[str, Any]:
        return {"resource_type": self.resource_type, "resource_id": self.resource_id,
                "endpoint": self.endpoint}


class _Connection:
    """One kept-alive HTTP/1.1 connection."""

    __slots__ = ("conn", "idle_since", "reused", "stream")

    def __init__(self, stream: ByteStream):
        self.stream = stream
        self.conn = h11.Connection(h11.CLIENT, max_incomplete_event_size=MAX_RESPONSE_HEAD)
        self.reused = False
        self.idle_since = 0.0

    async def next_event(self) -> Any:
        while True:
            try:
                event = self.conn.next_event()
            except h11.RemoteProtocolError as exc:
                raise UpstreamError(f"the upstream broke HTTP/1.1: {exc}") from None
            if event is not h11.NEED_DATA:
                return event
            data = await self.stream.read(READ_SIZE)
            try:
                self.conn.receive_data(data)
            except h11.RemoteProtocolError as exc:
                raise UpstreamError(f"the upstream broke HTTP/1.1: {exc}") from None

    async def send(self, event: Any) -> None:
        try:
            data = self.conn.send(event)
        except h11.LocalProtocolError as exc:
            raise UpstreamError(f"cannot send to the upstream: {exc}") from None
        if data:
            await self.stream.write(data)


@dataclass
class UpstreamResponse:
    """The head of an upstream answer; ``body()`` streams the rest, then hands the
    connection back to the pool (or closes it when the exchange was not clean)."""

    status: int
    headers: Headers
    _conn: _Connection = field(repr=False)
    _pool: UpstreamPool = field(repr=False)
    _key: tuple[Any, ...] = field(repr=False)
    _done: bool = False

    async def body(self) -> AsyncIterator[bytes]:
        try:
            while True:
                event = await self._conn.next_event()
                if isinstance(event, h11.Data):
                    yield bytes(event.data)
                elif isinstance(event, h11.EndOfMessage):
                    self._done = True
                    return
                else:  # ConnectionClosed before the end
                    raise UpstreamError("the upstream closed the connection mid-answer")
        finally:
            await self.aclose()

    async def aclose(self) -> None:
        conn, self._conn = self._conn, None  # type: ignore[assignment]
        if conn is None:
            return
        if self._done:
            await self._pool.put_back(self._key, conn)
        else:
            await conn.stream.close()


class UpstreamPool:
    """Kept-alive HTTP/1.1 connections per resource endpoint, opened through ``streams``."""

    def __init__(self, streams: NodeStreams, *, connect_timeout: float = 5.0,
                 response_timeout: float = 60.0, max_idle_per_target: int = 64,
                 idle_seconds: float = 20.0):
        self.streams = streams
        self.connect_timeout = connect_timeout
        self.response_timeout = response_timeout
        self.max_idle = max_idle_per_target
        self.idle_seconds = idle_seconds
        self._idle: dict[tuple[Any, ...], list[_Connection]] = {}

    @staticmethod
    def _key(target: StreamTarget) -> tuple[Any, ...]:
        return (target.node_id, target.resource_type, target.resource_id, target.endpoint)

    async def _open(self, target: StreamTarget) -> _Connection:
        try:
            stream = await self.streams.open_stream(target.node_id, SERVING_PORT,
                                                    target.args(),
                                                    timeout=self.connect_timeout)
        except StreamTimeout as exc:
            raise UpstreamTimeout(str(exc)) from None
        except StreamUnavailable as exc:
            raise UpstreamError(str(exc)) from None
        return _Connection(stream)

    async def _take_idle(self, key: tuple[Any, ...]) -> _Connection | None:
        idle = self._idle.get(key)
        now = time.monotonic()
        while idle:
            conn = idle.pop()
            if now - conn.idle_since < self.idle_seconds:
                conn.reused = True
                return conn
            await conn.stream.close()
        return None

    async def put_back(self, key: tuple[Any, ...], conn: _Connection) -> None:
        if conn.conn.our_state is h11.DONE and conn.conn.their_state is h11.DONE:
            conn.conn.start_next_cycle()
            idle = self._idle.setdefault(key, [])
            if len(idle) < self.max_idle:
                conn.idle_since = time.monotonic()
                idle.append(conn)
                return
        await conn.stream.close()

    async def close(self) -> None:
        for idle in self._idle.values():
            for conn in idle:
                await conn.stream.close()
        self._idle.clear()

    async def request(self, target: StreamTarget, method: str, path: str, headers: Headers,
                      body: AsyncIterator[bytes] | None = None) -> UpstreamResponse:
        """Send one request (``body`` streamed; ``headers`` say its framing with
        Content-Length or Transfer-Encoding: chunked) and return the response head."""
        key = self._key(target)
        conn = await self._take_idle(key)
        # A kept-alive connection the upstream closed meanwhile fails before any answer:
        # retried once on a new connection when there is no body to replay.
        attempts = 2 if body is None else 1
        while True:
            if conn is None:
                conn = await self._open(target)
            try:
                return await self._exchange(conn, key, method, path, headers, body)
            except UpstreamTimeout:
                await conn.stream.close()
                raise
            except (UpstreamError, ConnectionError, OSError) as exc:
                await conn.stream.close()
                attempts -= 1
                if not conn.reused or attempts <= 0:
                    if isinstance(exc, UpstreamError):
                        raise
                    raise UpstreamError(f"the upstream connection failed: {exc}") from None
                conn = None
            except BaseException:  # cancelled, or the client's body failed: never reused
                await conn.stream.close()
                raise

    async def _exchange(self, conn: _Connection, key: tuple[Any, ...], method: str, path: str,
                        headers: Headers, body: AsyncIterator[bytes] | None) -> UpstreamResponse:
        await conn.send(h11.Request(method=method, target=path, headers=headers))
        if body is not None:
            async for chunk in body:
                if chunk:
                    await conn.send(h11.Data(data=chunk))
        await conn.send(h11.EndOfMessage())
        try:
            async with asyncio.timeout(self.response_timeout):
                while True:
                    event = await conn.next_event()
                    if isinstance(event, h11.Response):
                        break
                    if isinstance(event, h11.InformationalResponse):
                        continue  # 100 Continue and friends: the final answer follows
                    raise UpstreamError("the upstream closed the connection without answering")
        except TimeoutError:
            raise UpstreamTimeout(f"the upstream sent no answer within "
                                  f"{self.response_timeout:g} s") from None
        return UpstreamResponse(status=event.status_code, headers=list(event.headers),
                                _conn=conn, _pool=self, _key=key)

    async def websocket(self, target: StreamTarget, path: str, headers: Headers,
                        subprotocols: Sequence[str], max_size: int) -> UpstreamWebSocket:
        """Open a WebSocket to ``path`` of the resource (its own connection, never pooled)."""
        conn = await self._open(target)
        proto = ClientProtocol(parse_uri(f"ws://upstream{path}"), max_size=max_size,
                               subprotocols=list(subprotocols) or None)  # type: ignore[arg-type]
        request = proto.connect()
        for name, value in headers:
            key = name.decode("latin-1")
            if key.lower() == "host":
                del request.headers["Host"]  # the client's Host, as for HTTP
            request.headers[key] = value.decode("latin-1")
        proto.send_request(request)
        ws = UpstreamWebSocket(conn.stream, proto)
        try:
            await ws.flush()
            async with asyncio.timeout(self.response_timeout):
                while proto.handshake_exc is None and not _handshake_done(proto):
                    data = await conn.stream.read(READ_SIZE)
                    if not data:
                        proto.receive_eof()
                        break
                    proto.receive_data(data)
        except TimeoutError:
            await conn.stream.close()
            raise UpstreamTimeout("the upstream did not accept the WebSocket in time") from None
        response = next((e for e in proto.events_received() if isinstance(e, WsResponse)),
                        None)
        if proto.handshake_exc is not None or response is None or response.status_code != 101:
            await conn.stream.close()
            raise UpstreamError(f"the upstream refused the WebSocket "
                                f"({proto.handshake_exc or 'no answer'})")
        ws.subprotocol = response.headers.get("Sec-WebSocket-Protocol")
        return ws


def _handshake_done(proto: ClientProtocol) -> bool:
    return proto.state is not State.CONNECTING


class UpstreamWebSocket:
    """Messages to and from the upstream's WebSocket (fragments reassembled)."""

    def __init__(self, stream: ByteStream, proto: ClientProtocol):
        self.stream = stream
        self.proto = proto
        self.subprotocol: str | None = None
        self._parts: list[bytes] = []
        self._opcode: Opcode | None = None
        self._queue: list[Frame] = []

    @property
    def close_code(self) -> int:
        rcvd = self.proto.close_rcvd
        return rcvd.code if rcvd is not None else 1000

    async def flush(self) -> None:
        for data in self.proto.data_to_send():
            if data:
                await self.stream.write(data)

    async def send(self, message: str | bytes) -> None:
        if isinstance(message, str):
            self.proto.send_text(message.encode())
        else:
            self.proto.send_binary(message)
        await self.flush()

    async def close(self, code: int = 1000, reason: str = "") -> None:
        try:
            self.proto.send_close(code, reason)
            await self.flush()
        except Exception:  # already closing
            pass
        await self.stream.close()

    async def receive(self) -> str | bytes | None:
        """The next whole message; None once the upstream closed."""
        while True:
            while self._queue:
                frame = self._queue.pop(0)
                if frame.opcode in (Opcode.TEXT, Opcode.BINARY):
                    self._opcode, self._parts = frame.opcode, [bytes(frame.data)]
                elif frame.opcode is Opcode.CONT:
                    self._parts.append(bytes(frame.data))
                elif frame.opcode is Opcode.CLOSE:
                    await self.flush()  # the protocol answered the close
                    return None
                else:  # ping/pong: the protocol answers pings itself
                    await self.flush()
                    continue
                if frame.fin:
                    data = b"".join(self._parts)
                    self._parts = []
                    return data.decode() if self._opcode is Opcode.TEXT else data
            data = await self.stream.read(READ_SIZE)
            if not data:
                self.proto.receive_eof()
                return None
            self.proto.receive_data(data)
            self._queue.extend(e for e in self.proto.events_received() if isinstance(e, Frame))
            if self.proto.state is State.CLOSED and not self._queue:
                await self.flush()
                return None


def header_value(headers: Headers | Mapping[bytes, bytes], name: bytes) -> bytes | None:
    items = headers.items() if isinstance(headers, Mapping) else headers
    for k, v in items:
        if k.lower() == name:
            return v
    return None
