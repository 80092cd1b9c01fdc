"""The proxy edges: ``/apps/{resource_id}/...``, ``/endpoints/{name}/...`` and, in subdomain
mode, every request to ``{resource_id}.{apps_host_suffix}``.

Pure ASGI, not FastAPI routes: bodies stream in both directions chunk by chunk (FastAPI
would read a request body whole), WebSockets pass message by message, and no worker thread
or request slot is held while bytes flow (the database is read only for the decisions, in
short read transactions, see platform/access/proxy.py). Each mounted app declares its
access (``access``), which the startup check (api/authz.py) lists with the routes.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator, Callable
from typing import Any
from urllib.parse import quote, urlencode

from starlette.types import ASGIApp, Receive, Scope, Send

from aicloud.api.authz import RouteAccess
from aicloud.api.deps import SESSION_COOKIE, request_actor
from aicloud.api.problems import PROBLEM_MEDIA_TYPE
from aicloud.api.server import RequestSlots
from aicloud.platform import access, audit, iam
from aicloud.runtime import AppContext
from aicloud.shared.errors import PROBLEM_TYPE_BASE, AppError
from aicloud.shared.logging import request_id_var

APPS_PREFIX = "/apps"
ENDPOINTS_PREFIX = "/endpoints"
_SEGMENT = re.compile(r"^/([A-Za-z0-9_.-]{1,64})(/.*)?$", re.S)
_SESSION = SESSION_COOKIE.encode()
TICKET_PATH = "/_aicloud/auth"


class ProxyAccess(RouteAccess):
    """A mounted proxy's declaration: what it checks, for the route table."""

    kind = "proxy"

    def __init__(self, description: str):
        self.description = description

    def describe(self) -> str:
        return f"proxy: {self.description}"


# --- small ASGI helpers -----------------------------------------------------------------------


def _headers(scope: Scope) -> list[tuple[bytes, bytes]]:
    return list(scope.get("headers") or [])


def _header(scope: Scope, name: bytes) -> bytes | None:
    for k, v in scope.get("headers") or ():
        if k == name:
            return v
    return None


def _cookie(scope: Scope, name: str) -> str | None:
    raw = _header(scope, b"cookie")
    if not raw:
        return None
    for part in raw.decode("latin-1").split(";"):
        k, _, v = part.strip().partition("=")
        if k == name and v:
            return v
    return None


def _client_ip(scope: Scope) -> str | None:
    client = scope.get("client")
    return client[0] if client else None


def _proto(scope: Scope) -> str:
    return "https" if scope.get("scheme") in ("https", "wss") else "http"


def _host(scope: Scope) -> bytes:
    return _header(scope, b"host") or b"localhost"


def _problem_body(scope: Scope, status: int, code: str, title: str, detail: str,
                  extra: dict[str, Any]) -> bytes:
    body = {"type": PROBLEM_TYPE_BASE + code, "title": title, "status": status,
            "detail": detail, "instance": scope.get("path", ""),
            "request_id": request_id_var.get() or scope.get("state", {}).get("request_id")}
    body.update({k: v for k, v in extra.items() if k not in body})
    return json.dumps(body).encode()


async def send_problem(scope: Scope, send: Send, status: int, code: str, title: str,
                       detail: str, headers: list[tuple[bytes, bytes]] | None = None,
                       **extra: Any) -> None:
    if scope["type"] == "websocket":
        # Before accept: uvicorn answers the handshake 403; the close code says why.
        await send({"type": "websocket.close", "code": 1008 if status < 500 else 1011,
                    "reason": f"{status} {title}"[:120]})
        return
    body = _problem_body(scope, status, code, title, detail, extra)
    out = [(b"content-type", PROBLEM_MEDIA_TYPE.encode()),
           (b"content-length", str(len(body)).encode()), *(headers or [])]
    if status == 401:
        out.append((b"www-authenticate", b"Bearer"))
    await send({"type": "http.response.start", "status": status, "headers": out})
    await send({"type": "http.response.body", "body": body})


async def send_error(scope: Scope, send: Send, exc: AppError) -> None:
    headers = []
    if isinstance(exc, access.RateLimited):
        headers.append((b"retry-after", str(max(1, int(exc.retry_after + 0.999))).encode()))
    extra = {k: v for k, v in exc.extra.items() if isinstance(v, str | int | float | bool)}
    await send_problem(scope, send, exc.status, exc.code, exc.title, exc.detail, headers,
                       **extra)


def _split(path: str) -> tuple[str, str] | None:
    """``/{segment}{rest}`` -> (segment, rest)."""
    m = _SEGMENT.match(path)
    if not m:
        return None
    return m.group(1), m.group(2) or ""


def _raw_rest(scope: Scope, prefix_len: int) -> str:
    """The request target after the first ``prefix_len`` characters of the (decoded) path,
    cut from the raw path so the client's percent-encoding reaches the app unchanged, plus
    the query string."""
    raw = scope.get("raw_path")
    path = raw.decode("latin-1") if raw else quote(scope["path"])
    segments = scope["path"][:prefix_len].count("/")
    rest = path[_nth_slash(path, segments + 1):] or "/"
    qs = scope.get("query_string") or b""
    return rest + ("?" + qs.decode("latin-1") if qs else "")


def _nth_slash(raw: str, n: int) -> int:
    """Index of the n-th '/' of raw (1-based), or len(raw)."""
    pos = -1
    for _ in range(n):
        pos = raw.find("/", pos + 1)
        if pos == -1:
            return len(raw)
    return pos


async def _request_body(receive: Receive) -> AsyncIterator[bytes]:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientGone
        yield message.get("body", b"")
        if not message.get("more_body", False):
            return


class ClientGone(Exception):
    pass


def _framing(scope: Scope) -> tuple[list[tuple[bytes, bytes]], bool]:
    """How the request's body is framed upstream: its Content-Length, or chunked when the
    client sent it chunked; no body otherwise."""
    length = _header(scope, b"content-length")
    if length is not None and length.strip().isdigit():
        return ([(b"content-length", length.strip())], int(length) > 0)
    te = _header(scope, b"transfer-encoding")
    if te is not None and b"chunked" in te.lower():
        return [(b"transfer-encoding", b"chunked")], True
    return [], False


# --- the forwarding both proxies share ------------------------------------------------------


async def forward_http(runtime: access.AccessRuntime, target: access.AccessTarget,
                       scope: Scope, receive: Receive, send: Send, *, upstream_target: str,
                       headers: list[tuple[bytes, bytes]],
                       response_headers: Callable[[list[tuple[bytes, bytes]]],
                                                  list[tuple[bytes, bytes]]]) -> int:
    """Send the request to the resource and stream the answer back; returns the status the
    client got."""
    framing, has_body = _framing(scope)
    body = _request_body(receive) if has_body else None
    try:
        resp = await runtime.pool.request(target.stream_target(), scope["method"],
                                          upstream_target, headers + framing, body)
    except ClientGone:
        return 499  # the client left while sending its body: nobody to answer
    except access.UpstreamTimeout as exc:
        await send_error(scope, send, access.UpstreamTimedOut(str(exc)))
        return 504
    except access.UpstreamError as exc:
        await send_error(scope, send, access.UpstreamFailed(str(exc)))
        return 502
    try:
        out = response_headers(resp.headers)
    except access.RedirectRefused as exc:
        await resp.aclose()
        await send_error(scope, send, access.UpstreamFailed(
            f"{exc}; the proxy never passes a redirect off the app's prefix"))
        return 502
    await send({"type": "http.response.start", "status": resp.status, "headers": out})
    chunks = resp.body()
    try:
        async for chunk in chunks:
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
    finally:
        await chunks.aclose()  # back to the pool when complete, else closed
    await send({"type": "http.response.body", "body": b"", "more_body": False})
    return resp.status


async def forward_websocket(runtime: access.AccessRuntime, target: access.AccessTarget,
                            scope: Scope, receive: Receive, send: Send, *,
                            upstream_target: str,
                            headers: list[tuple[bytes, bytes]]) -> None:
    message = await receive()
    if message["type"] != "websocket.connect":
        return
    try:
        upstream = await runtime.pool.websocket(
            target.stream_target(), upstream_target, headers,
            subprotocols=list(scope.get("subprotocols") or ()),
            max_size=runtime.config.max_websocket_message)
    except access.UpstreamTimeout:
        await send({"type": "websocket.close", "code": 1011, "reason": "504 upstream timeout"})
        return
    except access.UpstreamError:
        await send({"type": "websocket.close", "code": 1011, "reason": "502 bad gateway"})
        return
    await send({"type": "websocket.accept", "subprotocol": upstream.subprotocol})

    async def client_to_upstream() -> None:
        while True:
            msg = await receive()
            if msg["type"] == "websocket.receive":
                if len(msg.get("bytes") or msg.get("text") or "") > \
                        runtime.config.max_websocket_message:
                    await upstream.close(1009, "message too big")
                    return
                data = msg.get("text")
                await upstream.send(data if data is not None else msg.get("bytes") or b"")
            elif msg["type"] == "websocket.disconnect":
                await upstream.close(msg.get("code", 1000) if msg.get("code") in (
                    1000, 1001) else 1000)
                return

    async def upstream_to_client() -> None:
        while True:
            data = await upstream.receive()
            if data is None:
                code = upstream.close_code
                await send({"type": "websocket.close",
                            "code": code if code in (1000, 1001, 1008, 1011) else 1000})
                return
            if isinstance(data, str):
                await send({"type": "websocket.send", "text": data})
            else:
                await send({"type": "websocket.send", "bytes": data})

    tasks = [asyncio.ensure_future(client_to_upstream()),
             asyncio.ensure_future(upstream_to_client())]
    try:
        done, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for t in pending:
            t.cancel()
        for t in done:
            if t.exception() is not None and not isinstance(t.exception(), ClientGone):
                pass  # the other side is gone: nothing more to tell anyone
    finally:
        for t in tasks:
            t.cancel()
        await upstream.stream.close()


# --- browser apps ------------------------------------------------------------------------------


class AppProxy:
    """``/apps/{resource_id}/...`` (path mode) on the API's host."""

    access = ProxyAccess("open the resource's app: the permission its product names "
                         "(GPUaaS: gpuaas.instances.open_app); another tenant's is 404")

    def __init__(self, ctx: AppContext, slots: RequestSlots):
        self.ctx = ctx
        self.slots = slots

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        runtime = self.ctx.access
        path = scope["path"][len(APPS_PREFIX):]
        parts = _split(path)
        if parts is None:
            await send_problem(scope, send, 404, "not-found", "Not found", "not found")
            return
        resource_id, rest = parts
        prefix = f"{APPS_PREFIX}/{resource_id}"
        if not rest and scope["type"] == "http":
            # Relative links of the app's pages resolve against the directory.
            qs = scope.get("query_string") or b""
            location = (prefix + "/" + ("?" + qs.decode("latin-1") if qs else "")).encode()
            await send({"type": "http.response.start", "status": 308,
                        "headers": [(b"location", location), (b"content-length", b"0")]})
            await send({"type": "http.response.body", "body": b""})
            return
        try:
            access.check_header_size(_headers(scope), max_total=runtime.config.max_header_bytes,
                                     max_one=runtime.config.max_one_header_bytes)
        except access.HeadersTooLarge as exc:
            await send_problem(scope, send, 431, "headers-too-large",
                               "Request header fields too large", str(exc))
            return
        if scope["type"] == "websocket" and not _same_origin(scope):
            await send_problem(scope, send, 403, "forbidden", "Cross-origin WebSocket",
                               "a WebSocket to an app must come from the platform's origin")
            return
        token = _bearer(scope) or _cookie(scope, SESSION_COOKIE)
        try:
            opened = await runtime.open_app(
                token, resource_id, slot=self.slots.slot,
                actor=lambda p: _actor(scope, p))
        except AppError as exc:
            await send_error(scope, send, exc)
            return
        suffix = runtime.config.apps_host_suffix
        if suffix and scope["type"] == "http":
            # Subdomain mode: the app lives on its own origin; hand over with a ticket.
            await _redirect_to_app_host(scope, send, runtime, opened, suffix, rest)
            return
        await _proxy_app(runtime, opened.target, scope, receive, send, prefix=prefix,
                         rest_offset=len(prefix), sandbox=runtime.config.apps_path_sandbox)


def _bearer(scope: Scope) -> str | None:
    value = _header(scope, b"authorization")
    if not value:
        return None
    scheme, _, token = value.decode("latin-1").partition(" ")
    return token.strip() or None if scheme.lower() == "bearer" else None


def _same_origin(scope: Scope) -> bool:
    origin = _header(scope, b"origin")
    if origin is None:
        return True  # not a browser: it carries its own credentials
    host = _host(scope).decode("latin-1").lower()
    o = origin.decode("latin-1").lower()
    return o.split("://", 1)[-1] == host


def _actor(scope: Scope, principal: iam.Principal) -> audit.Actor:
    from starlette.requests import HTTPConnection

    return request_actor(HTTPConnection(scope), principal)  # type: ignore[arg-type]


async def _proxy_app(runtime: access.AccessRuntime, target: access.AccessTarget, scope: Scope,
                     receive: Receive, send: Send, *, prefix: str, rest_offset: int,
                     sandbox: bool) -> None:
    upstream_target = _raw_rest(scope, rest_offset)
    host = _host(scope)
    websocket = scope["type"] == "websocket"
    headers = access.upstream_request_headers(
        _headers(scope), session_cookie=_SESSION, prefix=prefix, client_ip=_client_ip(scope),
        proto=_proto(scope), host=host, websocket=websocket)
    if websocket:
        await forward_websocket(runtime, target, scope, receive, send,
                                upstream_target=upstream_target, headers=headers)
        return
    own = [host.decode("latin-1").lower()]
    if target.endpoint:
        own.append(target.endpoint.split("://", 1)[-1].split("/", 1)[0].lower())
    upstream_path = upstream_target.split("?", 1)[0]
    await forward_http(
        runtime, target, scope, receive, send, upstream_target=upstream_target,
        headers=headers, response_headers=lambda h: access.downstream_response_headers(
            h, prefix=prefix, upstream_path=upstream_path, own_hosts=own,
            session_cookie=_SESSION, sandbox=sandbox))


async def _redirect_to_app_host(scope: Scope, send: Send, runtime: access.AccessRuntime,
                                opened: access.AppAccess, suffix: str, rest: str) -> None:
    principal = opened.principal
    if principal.key_scope is not None or principal.key_permissions is not None:
        await send_problem(scope, send, 403, "forbidden", "Narrowed key",
                           "a narrowed API key cannot open an app on its own host; use a "
                           "login session")
        return
    ticket = runtime.tickets.sign({"p": principal.id, "k": principal.kind,
                                   "r": opened.target.id, "c": opened.credential,
                                   "n": rest or "/"}, access.TICKET_SECONDS)
    port = ""
    host = _host(scope).decode("latin-1")
    if ":" in host and not host.endswith("]"):
        port = ":" + host.rsplit(":", 1)[1]
    url = (f"{_proto(scope)}://{opened.target.id.lower()}.{suffix}{port}{TICKET_PATH}?"
           + urlencode({"ticket": ticket}))
    await send({"type": "http.response.start", "status": 303,
                "headers": [(b"location", url.encode()), (b"content-length", b"0"),
                            (b"cache-control", b"no-store"),
                            (b"referrer-policy", b"no-referrer")]})
    await send({"type": "http.response.body", "body": b""})


class AppHostMiddleware:
    """Subdomain mode: a request to ``{resource_id}.{suffix}`` is the app's and nothing
    else's: the API is not served on app hosts, so an app's page cannot call it there."""

    def __init__(self, app: ASGIApp, *, ctx: AppContext, slots: RequestSlots):
        self.app = app
        self.ctx = ctx
        self.slots = slots
        suffix = ctx.settings.access.apps_host_suffix
        self.suffix = "." + suffix if suffix else None

    def _resource(self, scope: Scope) -> str | None:
        if self.suffix is None or scope["type"] not in ("http", "websocket"):
            return None
        host = _host(scope).decode("latin-1").lower().split(":", 1)[0]
        if not host.endswith(self.suffix):
            return None
        label = host[: -len(self.suffix)]
        return label if label and "." not in label else ""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        label = self._resource(scope)
        if label is None:
            await self.app(scope, receive, send)
            return
        runtime = self.ctx.access
        # Host names are case-insensitive; ids carry an upper-case ULID.
        resource_id = _id_from_label(label)
        if not resource_id:
            await send_problem(scope, send, 404, "not-found", "Not found", "not found")
            return
        if scope["type"] == "http" and scope["path"] == TICKET_PATH:
            await self._exchange_ticket(scope, send, runtime, resource_id)
            return
        if scope["type"] == "websocket" and not _same_origin(scope):
            await send_problem(scope, send, 403, "forbidden", "Cross-origin WebSocket",
                               "a WebSocket to an app must come from the app's own origin")
            return
        claims = runtime.app_cookies.verify(_cookie(scope, access.APP_COOKIE) or "")
        if claims is None or claims.get("r") != resource_id:
            await send_problem(scope, send, 401, "unauthenticated", "Authentication required",
                               f"open the app through the platform: /apps/{resource_id}/")
            return
        principal = iam.Principal(id=str(claims["p"]), kind=str(claims["k"]))
        from starlette.requests import HTTPConnection

        try:
            opened = await runtime.open_app_as(
                principal, resource_id, slot=self.slots.slot,
                actor=request_actor(HTTPConnection(scope), principal),  # type: ignore[arg-type]
                credential=str(claims.get("c") or principal.id))
        except AppError as exc:
            await send_error(scope, send, exc)
            return
        await _proxy_app(runtime, opened.target, scope, receive, send, prefix="",
                         rest_offset=0, sandbox=False)

    async def _exchange_ticket(self, scope: Scope, send: Send, runtime: access.AccessRuntime,
                               resource_id: str) -> None:
        from urllib.parse import parse_qs

        qs = parse_qs((scope.get("query_string") or b"").decode("latin-1"))
        claims = runtime.tickets.verify((qs.get("ticket") or [""])[0])
        if claims is None or claims.get("r") != resource_id:
            await send_problem(scope, send, 401, "unauthenticated", "Ticket not valid",
                               f"the ticket is not valid or has expired; open the app "
                               f"through the platform: /apps/{resource_id}/")
            return
        cookie = runtime.app_cookies.sign({k: claims[k] for k in ("p", "k", "r", "c")},
                                          access.APP_COOKIE_SECONDS)
        secure = "; Secure" if _proto(scope) == "https" else ""
        nxt = str(claims.get("n") or "/")
        if not nxt.startswith("/") or nxt.startswith("//"):
            nxt = "/"
        await send({"type": "http.response.start", "status": 303, "headers": [
            (b"location", nxt.encode("latin-1")), (b"content-length", b"0"),
            (b"cache-control", b"no-store"), (b"referrer-policy", b"no-referrer"),
            (b"set-cookie", f"{access.APP_COOKIE}={cookie}; Path=/; HttpOnly; SameSite=Lax; "
                            f"Max-Age={access.APP_COOKIE_SECONDS}{secure}".encode())]})
        await send({"type": "http.response.body", "body": b""})


def _id_from_label(label: str) -> str | None:
    """``inst_01hx...`` (a host label, lower-cased) -> ``inst_01HX...``: prefixes are lower
    case and ULIDs upper case."""
    prefix, sep, ulid = label.partition("_")
    if not sep or not ulid:
        return None
    return f"{prefix}_{ulid.upper()}"


# --- API endpoints -------------------------------------------------------------------------------


def _endpoint_key(scope: Scope) -> str | None:
    bearer = _bearer(scope)
    if bearer:
        return bearer
    key = _header(scope, b"x-api-key")
    return key.decode("latin-1").strip() if key else None


class EndpointProxy:
    """``/endpoints/{name}/...``: a published resource, called with one of its keys."""

    access = ProxyAccess("a key of the endpoint (aiep_..., Authorization: Bearer or "
                         "X-Api-Key); rate-limited per key; metered as endpoint_requests")

    def __init__(self, ctx: AppContext, slots: RequestSlots):
        self.ctx = ctx
        self.slots = slots

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        runtime = self.ctx.access
        if scope["type"] != "http":
            await send({"type": "websocket.close", "code": 1008,
                        "reason": "endpoints serve HTTP only"})
            return
        parts = _split(scope["path"][len(ENDPOINTS_PREFIX):])
        if parts is None:
            await send_problem(scope, send, 404, "not-found", "Not found", "not found")
            return
        name, _rest = parts
        prefix = f"{ENDPOINTS_PREFIX}/{name}"
        try:
            access.check_header_size(_headers(scope), max_total=runtime.config.max_header_bytes,
                                     max_one=runtime.config.max_one_header_bytes)
        except access.HeadersTooLarge as exc:
            await send_problem(scope, send, 431, "headers-too-large",
                               "Request header fields too large", str(exc))
            return
        try:
            call = await runtime.call_endpoint(name, _endpoint_key(scope),
                                               slot=self.slots.slot)
        except AppError as exc:
            await send_error(scope, send, exc)
            return
        upstream_target = _raw_rest(scope, len(prefix))
        host = _host(scope)
        headers = access.endpoint_request_headers(
            _headers(scope), prefix=prefix, client_ip=_client_ip(scope), proto=_proto(scope),
            host=host)
        own = [host.decode("latin-1").lower()]
        if call.target.endpoint:
            own.append(call.target.endpoint.split("://", 1)[-1].split("/", 1)[0].lower())
        upstream_path = upstream_target.split("?", 1)[0]
        status = 502
        try:
            status = await forward_http(
                runtime, call.target, scope, receive, send, upstream_target=upstream_target,
                headers=headers, response_headers=lambda h: access.endpoint_response_headers(
                    h, prefix=prefix, upstream_path=upstream_path, own_hosts=own))
        finally:
            runtime.count(call, status)
