"""Strict JSON request bodies, checked once at the edge for every route.

Python's ``json`` (and so FastAPI) accepts an object with the same key twice and keeps the
last value, and accepts ``NaN``/``Infinity``. A body ``{"amount": 1, "amount": 10**9}`` can then
mean one thing to a proxy, a signature check or an audit reader and another to the route.
This middleware parses every JSON request body with a parser that refuses both and answers
422 before any route runs; a body that passes is handed on unchanged.
"""

from __future__ import annotations

import json
from typing import Any

from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from aicloud.api.problems import problem


class NotStrictJson(ValueError):
    """Valid for Python's json module, refused here."""


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # dict() in C, then a length comparison: a Python loop over every key of every object
    # cost more than parsing a 1,000-record usage body.
    out = dict(pairs)
    if len(out) != len(pairs):
        seen: set[str] = set()
        key = next(k for k, _ in pairs if k in seen or seen.add(k))  # type: ignore[func-returns-value]
        raise NotStrictJson(f"duplicate key {key!r} in a JSON object")
    return out


def _no_constant(name: str) -> Any:
    raise NotStrictJson(f"{name} is not a JSON value")


def parse_strict_json(body: bytes) -> Any:
    """``json.loads`` that refuses duplicate object keys and NaN/Infinity."""
    return json.loads(body, object_pairs_hook=_no_duplicates, parse_constant=_no_constant)


def is_json(scope: Scope) -> bool:
    """The request declares a JSON body (only those are checked here)."""
    for name, value in scope.get("headers") or []:
        if name == b"content-type":
            media = value.split(b";", 1)[0].strip().lower()
            return media == b"application/json" or media.endswith(b"+json")
    return False


class StrictJsonBodyMiddleware:
    """Refuse JSON request bodies with duplicate keys (pure ASGI: the body is read once,
    checked, and replayed to the application)."""

    def __init__(self, app: ASGIApp, *, passthrough: tuple[str, ...] = ()):
        self.app = app
        # Path prefixes whose bodies are not the API's (the proxies stream them to workloads).
        self.passthrough = passthrough

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not is_json(scope) or (
                self.passthrough and scope["path"].startswith(self.passthrough)):
            await self.app(scope, receive, send)
            return
        chunks: list[bytes] = []
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client went away
                await self.app(scope, _replay([message], receive), send)
                return
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        if body.strip():
            try:
                parse_strict_json(body)
            except NotStrictJson as exc:
                await _refuse(scope, send, str(exc))
                return
            except ValueError:
                pass  # not JSON at all: the route's own parser answers that, as it always did
        await self.app(scope, _replay([{"type": "http.request", "body": body,
                                        "more_body": False}], receive), send)


def _replay(messages: list[Message], receive: Receive) -> Receive:
    async def replayed() -> Message:
        return messages.pop(0) if messages else await receive()
    return replayed


async def _refuse(scope: Scope, send: Send, detail: str) -> None:
    async def no_body() -> Message:
        return {"type": "http.disconnect"}

    response = problem(Request(scope), status=422, code="validation-failed",
                       title="The request is not valid", detail=detail,
                       errors=[{"loc": ["body"], "msg": detail, "type": "json_duplicate_key"}])
    await response(scope, no_body, send)
