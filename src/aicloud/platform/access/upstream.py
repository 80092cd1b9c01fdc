"""Seam 2, server side: byte streams to a resource's serving port.

Everything ``platform/access`` sends to a workload (proxied HTTP, WebSockets) travels over a
``ByteStream`` that a ``NodeStreams`` opens. The proxy speaks HTTP/1.1 itself over that
stream (aicloud.platform.access.http1), so a transport only moves bytes:

- ``DirectStreams`` (here): a TCP connection to the resource's ``endpoint`` URL, today's
  loopback port that pasta forwards into the workload's network namespace. It works only
  where the API runs on the node (one machine: kind, dev).
- The node link (issue 12, seam 2) implements the same protocol with a channel of the agent's
  connection; the agent connects the channel to the workload's port on its host.

A transport raises ``StreamUnavailable`` when it cannot reach the resource (answered 502)
and never blocks longer than ``connect_timeout`` (answered 504).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import urlsplit

# What an open_stream call asks for: a byte stream to the serving port of a resource.
SERVING_PORT = "serving-port"


class StreamUnavailable(Exception):
    """The resource's port cannot be reached now (not listening, node not connected)."""


class StreamTimeout(StreamUnavailable):
    """Reaching the resource's port took longer than allowed."""


class ByteStream(Protocol):
    """One bidirectional byte stream (a TCP connection, or a channel of a node's link)."""

    async def read(self, max_bytes: int = 65536) -> bytes:
        """Up to ``max_bytes``; ``b""`` once the other side has closed its half."""
        ...

    async def write(self, data: bytes) -> None:
        """Send all of ``data`` (waits while the transport's flow control says so)."""
        ...

    async def close(self) -> None:
        ...


class NodeStreams(Protocol):
    """Opens byte streams to resources on nodes. ``kind`` is SERVING_PORT for the proxy;
    ``args`` name the resource (``resource_type``, ``resource_id``) and carry the
    ``endpoint`` the product recorded (what a direct transport connects to)."""

    async def open_stream(self, node_id: str | None, kind: str,
                          args: Mapping[str, Any], *, timeout: float) -> ByteStream:
        ...


@dataclass
class _TcpStream:
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter

    async def read(self, max_bytes: int = 65536) -> bytes:
        try:
            return await self.reader.read(max_bytes)
        except (ConnectionError, OSError):
            return b""

    async def write(self, data: bytes) -> None:
        self.writer.write(data)
        if self.writer.transport.get_write_buffer_size() > 262_144:
            await self.writer.drain()

    async def close(self) -> None:
        self.writer.close()
        try:
            await self.writer.wait_closed()
        except (ConnectionError, OSError):
            pass


class DirectStreams:
    """TCP straight to the ``endpoint`` URL (http://host:port) the product recorded."""

    async def open_stream(self, node_id: str | None, kind: str,
                          args: Mapping[str, Any], *, timeout: float) -> ByteStream:
        if kind != SERVING_PORT:
            raise StreamUnavailable(f"direct streams carry only {SERVING_PORT!r}, not {kind!r}")
        url = urlsplit(str(args.get("endpoint") or ""))
        if url.scheme != "http" or not url.hostname or not url.port:
            raise StreamUnavailable("the resource serves no endpoint")
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(url.hostname, url.port, limit=262_144), timeout)
        except TimeoutError:
            raise StreamTimeout(f"no connection to the resource within {timeout:g} s") from None
        except OSError as exc:
            raise StreamUnavailable(f"the resource's port refused the connection "
                                    f"({exc.strerror or exc})") from None
        return _TcpStream(reader, writer)
