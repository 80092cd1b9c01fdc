"""A product-neutral link: one WebSocket carrying JSON RPCs both ways, one-way notices and
multiplexed byte channels with per-channel flow control (see ``frames.py``, ``rpc.py``,
``client.py``). No business meaning lives here: the ops are the products' handlers."""

from aicloud.shared.link.client import LinkClient, LinkDown, LinkRefused
from aicloud.shared.link.frames import (
    CLOSE_PROTOCOL,
    CLOSE_REFUSED,
    CLOSE_REPLACED,
    CLOSE_TOO_BIG,
    MAX_BINARY_FRAME,
    MAX_TEXT_FRAME,
    FrameError,
)
from aicloud.shared.link.rpc import Channel, LinkClosed, Peer, RemoteError, Transport

__all__ = [
    "CLOSE_PROTOCOL",
    "CLOSE_REFUSED",
    "CLOSE_REPLACED",
    "CLOSE_TOO_BIG",
    "MAX_BINARY_FRAME",
    "MAX_TEXT_FRAME",
    "Channel",
    "FrameError",
    "LinkClient",
    "LinkClosed",
    "LinkDown",
    "LinkRefused",
    "Peer",
    "RemoteError",
    "Transport",
]
