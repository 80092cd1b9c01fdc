"""The link's RPC and channels over an in-memory transport pair: ids both ways, errors,
credit windows (a stalled reader holds back only its own channel), integrity of a large
stream, and protocol errors closing the link."""

from __future__ import annotations

import asyncio
import hashlib
import os
from typing import Any

import pytest

from aicloud.shared.link import CLOSE_PROTOCOL, Channel, LinkClosed, Peer, RemoteError
from aicloud.shared.link.frames import MAX_TEXT_FRAME, FrameError, decode, encode, pack, unpack
from aicloud.shared.link.rpc import WINDOW, OpError


class Pipe:
    """One end of an in-memory link; ``sent`` counts bytes of binary frames."""

    def __init__(self) -> None:
        self.inbox: asyncio.Queue[str | bytes | None] = asyncio.Queue()
        self.other: Pipe | None = None
        self.sent = 0
        self.close_code: int | None = None

    async def send_text(self, data: str) -> None:
        if self.close_code is not None:
            raise LinkClosed("closed")
        assert self.other is not None
        self.other.inbox.put_nowait(data)

    async def send_bytes(self, data: bytes) -> None:
        if self.close_code is not None:
            raise LinkClosed("closed")
        assert self.other is not None
        self.sent += len(data)
        self.other.inbox.put_nowait(data)

    async def receive(self) -> str | bytes:
        item = await self.inbox.get()
        if item is None:
            raise LinkClosed("closed")
        return item

    async def close(self, code: int, reason: str) -> None:
        self.close_code = code
        assert self.other is not None
        self.other.close_code = code
        self.other.inbox.put_nowait(None)
        self.inbox.put_nowait(None)


def pair() -> tuple[Pipe, Pipe]:
    a, b = Pipe(), Pipe()
    a.other, b.other = b, a
    return a, b


def test_frames_round_trip_and_refuse_garbage() -> None:
    from aicloud.shared.link.frames import Answer, Push, Request

    for m in (Request(1, "op", {"a": [1]}), Answer(2, True, result=None),
              Answer(3, False, error={"type": "x", "detail": "y", "temporary": False}),
              Push("work.changed", {})):
        assert decode(encode(m)) == m
    for bad in ("[]", "{}", '{"id": 0, "op": "x"}', '{"id": true, "op": "x"}',
                '{"id": 1, "op": ""}', '{"id": 1}', '{"push": 5}', '{"id": 1, "ok": NaN}',
                "x" * (MAX_TEXT_FRAME + 1), '{"id": 1, "op": "x", "args": []}'):
        with pytest.raises(FrameError):
            decode(bad)
    assert unpack(pack(7, b"abc")) == (7, b"abc")
    with pytest.raises(FrameError):
        unpack(b"\x00\x01")


def test_rpc_both_ways_with_errors() -> None:
    async def run() -> None:
        a, b = pair()

        async def server_ops(op: str, args: dict[str, Any]) -> Any:
            if op == "add":
                return args["x"] + args["y"]
            if op == "refuse":
                raise OpError("not-found", "no such thing")
            raise RuntimeError("boom")

        async def client_ops(op: str, args: dict[str, Any]) -> Any:
            return {"pong": args}

        client = Peer(a, handler=client_ops, initiator=True)
        server = Peer(b, handler=server_ops, initiator=False)
        tasks = [asyncio.create_task(client.run()), asyncio.create_task(server.run())]
        results = await asyncio.gather(*(client.call("add", {"x": i, "y": 1})
                                         for i in range(50)))
        assert results == [i + 1 for i in range(50)]
        assert await server.call("ping", {"n": 1}) == {"pong": {"n": 1}}
        with pytest.raises(RemoteError) as e:
            await client.call("refuse")
        assert (e.value.type, e.value.temporary) == ("not-found", False)
        with pytest.raises(RemoteError) as e:
            await client.call("crash")
        assert e.value.type == "RuntimeError" and e.value.temporary
        await client.close(1000, "bye")
        await asyncio.wait_for(asyncio.gather(*tasks), 5)
        with pytest.raises(LinkClosed):
            await client.call("add", {"x": 1, "y": 2})
    asyncio.run(run())


def test_a_stalled_channel_holds_back_only_itself() -> None:
    """The reader of one channel stops reading: its writer stops at the window, while
    another channel and RPCs go on; once read, all of it arrives intact."""
    async def run() -> None:
        a, b = pair()
        served: dict[str, Channel] = {}
        opened = asyncio.Event()

        async def on_channel(channel: Channel, kind: str, args: dict[str, Any]) -> None:
            served[args["name"]] = channel
            if len(served) == 2:
                opened.set()
            await asyncio.sleep(3600)  # the test reads and writes these channels itself

        async def ops(op: str, args: dict[str, Any]) -> Any:
            return "ok"

        client = Peer(a, handler=ops, initiator=True)
        server = Peer(b, handler=ops, on_channel=on_channel, initiator=False)
        tasks = [asyncio.create_task(client.run()), asyncio.create_task(server.run())]
        slow = await client.open_channel("logs", {"name": "slow"})
        fast = await client.open_channel("logs", {"name": "fast"})
        await opened.wait()
        assert slow.id % 2 == 1 and fast.id % 2 == 1 and slow.id != fast.id
        payload = os.urandom(3 * WINDOW)
        writer = asyncio.create_task(slow.write(payload))
        await asyncio.sleep(0.2)
        assert not writer.done()  # stopped at the window: nobody reads
        assert a.sent <= WINDOW + 4 * (WINDOW // 1024 + 4)
        # The other channel and the RPCs still flow.
        await fast.write(b"hello")
        assert await served["fast"].read() == b"hello"
        assert await client.call("x") == "ok"
        got = bytearray()
        while len(got) < len(payload):
            got += await served["slow"].read()
        await asyncio.wait_for(writer, 5)
        assert hashlib.sha256(got).digest() == hashlib.sha256(payload).digest()
        await slow.close()
        assert await served["slow"].read() == b""  # EOF after the data
        await client.close(1000, "")
        for t in tasks:
            t.cancel()
    asyncio.run(run())


def test_a_protocol_error_closes_the_link() -> None:
    async def run() -> None:
        a, b = pair()
        server = Peer(b, initiator=False)
        task = asyncio.create_task(server.run())
        await a.send_text('{"id": "x"}')
        await asyncio.wait_for(task, 5)
        assert server.closed and b.close_code == CLOSE_PROTOCOL
    asyncio.run(run())
