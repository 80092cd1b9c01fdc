"""The connecting side of a link, for synchronous callers (a node agent's controllers).

:class:`LinkClient` keeps one WebSocket open from a background thread with its own event
loop and reconnects when it drops, after a backoff with jitter (``Backoff``: doubling from
``base`` to ``cap``, each delay a random point in its upper half, so a fleet of agents that
lost the API together does not come back in lockstep). ``call`` is blocking and raises
:class:`LinkDown` (temporary: the caller retries later) while there is no link.

A refusal (close code ``CLOSE_REFUSED``: a bad, unknown or revoked credential) is final:
the client stops and ``call`` raises :class:`LinkRefused` with the server's reason.
"""

from __future__ import annotations

import asyncio
import logging
import random
import threading
from collections.abc import Awaitable, Callable
from concurrent.futures import Future
from typing import Any

import websockets
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from aicloud.shared.controllers import Backoff
from aicloud.shared.link.frames import CLOSE_REFUSED, MAX_BINARY_FRAME, MAX_TEXT_FRAME
from aicloud.shared.link.rpc import (
    ChannelHandler,
    Handler,
    LinkClosed,
    Peer,
    PushHandler,
)

log = logging.getLogger(__name__)


class LinkDown(ConnectionError):
    """No link right now (it reconnects by itself); retry later."""

    temporary = True


class LinkRefused(ConnectionError):
    """The server refused this client's credential: reconnecting will not help."""

    temporary = False


class _WsTransport:
    def __init__(self, ws: ClientConnection):
        self.ws = ws

    async def send_text(self, data: str) -> None:
        try:
            await self.ws.send(data)
        except ConnectionClosed as e:
            raise LinkClosed(str(e)) from None

    async def send_bytes(self, data: bytes) -> None:
        try:
            await self.ws.send(data)
        except ConnectionClosed as e:
            raise LinkClosed(str(e)) from None

    async def receive(self) -> str | bytes:
        try:
            return await self.ws.recv()
        except ConnectionClosed as e:
            raise LinkClosed(str(e)) from None

    async def close(self, code: int, reason: str) -> None:
        await self.ws.close(code, reason)


class LinkClient:
    def __init__(self, url: str | Callable[[], str], token: Callable[[], str], *,
                 handler: Handler | None = None,
                 on_push: PushHandler | None = None, on_channel: ChannelHandler | None = None,
                 on_connect: Callable[[], Awaitable[None]] | None = None,
                 backoff: Backoff | None = None, rng: random.Random | None = None,
                 name: str = "link"):
        self._url = url if callable(url) else (lambda: url)
        self.token = token
        self.handler, self.on_push, self.on_channel = handler, on_push, on_channel
        self.on_connect = on_connect
        self.backoff = backoff or Backoff(base=0.5, cap=30.0)
        self.rng = rng or random.Random()
        self.name = name
        self.peer: Peer | None = None
        self.refused: str | None = None
        self.connects = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name=name, daemon=True)
        self._connected = threading.Event()
        self._stopping = False
        self._started = False
        self._main: Future[None] | None = None

    @property
    def url(self) -> str:
        try:
            return self._url()
        except Exception as e:  # not known yet (e.g. the embedding server is starting)
            return f"<{e}>"

    # --- lifecycle ----------------------------------------------------------------------

    def start(self) -> None:
        if self._started:
            return
        self._started = True
        self._thread.start()
        self._main = asyncio.run_coroutine_threadsafe(self._keep_connected(), self._loop)

    def is_connected(self) -> bool:
        peer = self.peer
        return peer is not None and not peer.closed

    def wait_connected(self, timeout: float) -> bool:
        return self._connected.wait(timeout)

    def stop(self) -> None:
        self._stopping = True
        if self._thread.is_alive():
            peer = self.peer
            if peer is not None:
                asyncio.run_coroutine_threadsafe(peer.close(1000, "agent stopping"),
                                                 self._loop).result(5)
            if self._main is not None:
                self._main.cancel()
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(5)

    async def _keep_connected(self) -> None:
        failures = 0
        while not self._stopping and self.refused is None:
            try:
                async with connect(self._url(), additional_headers={
                        "Authorization": f"Bearer {self.token()}"},
                        max_size=max(MAX_TEXT_FRAME, MAX_BINARY_FRAME),
                        open_timeout=10, ping_interval=10, ping_timeout=20) as ws:
                    failures = 0
                    await self._serve(ws)
            except InvalidStatus as e:
                if e.response.status_code in (401, 403):
                    self._refuse(f"HTTP {e.response.status_code} on the link")
                log.warning("%s: refused by %s: HTTP %s", self.name, self.url,
                            e.response.status_code)
            except (TimeoutError, OSError, websockets.WebSocketException) as e:
                log.warning("%s: cannot reach %s: %s", self.name, self.url, e)
            except Exception:
                log.exception("%s: link failed", self.name)
            self._connected.clear()
            self.peer = None
            if self._stopping or self.refused is not None:
                return
            failures += 1
            delay = self.backoff.delay(failures, self.rng)
            log.info("%s: reconnecting in %.1fs", self.name, delay)
            await asyncio.sleep(delay)

    async def _serve(self, ws: ClientConnection) -> None:
        peer = Peer(_WsTransport(ws), handler=self.handler, on_push=self.on_push,
                    on_channel=self.on_channel, initiator=True, name=self.name)
        self.peer = peer
        self.connects += 1
        self._connected.set()
        log.info("%s: connected to %s", self.name, self.url)
        hello = asyncio.create_task(self.on_connect()) if self.on_connect else None
        await peer.run()
        if hello is not None and not hello.done():
            hello.cancel()
        if ws.close_code == CLOSE_REFUSED:
            self._refuse(ws.close_reason or "refused")
        else:
            log.warning("%s: link closed (%s %s)", self.name, ws.close_code,
                        ws.close_reason)

    def _refuse(self, reason: str) -> None:
        self.refused = reason
        log.error("%s: the server refused this node: %s", self.name, reason)

    # --- calls from other threads -------------------------------------------------------

    def call(self, op: str, args: dict[str, Any] | None = None, *,
             timeout: float = 30.0) -> Any:
        if self.refused is not None:
            raise LinkRefused(self.refused)
        peer = self.peer
        if peer is None or peer.closed:
            raise LinkDown(f"{self.name}: not connected to {self.url}")
        future = asyncio.run_coroutine_threadsafe(peer.call(op, args, timeout=timeout),
                                                  self._loop)
        try:
            return future.result(timeout + 1)
        except LinkClosed as e:
            raise LinkDown(str(e)) from None

    def run(self, coro: Awaitable[Any], timeout: float = 30.0) -> Any:
        """Run a coroutine on the link's loop (e.g. to write on a channel)."""
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)  # type: ignore[arg-type]
