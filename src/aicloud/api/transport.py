"""Transport security: was this request made over HTTPS, by whom, and may it be served?

The server runs with uvicorn's own proxy handling off (it trusts X-Forwarded-* from
127.0.0.1 by default), so ``scope["client"]`` is the TCP peer and ``scope["scheme"]`` is what
that peer spoke. Only a peer listed in ``trusted_proxies`` may say otherwise:

- ``X-Forwarded-Proto``: the scheme the proxy received. A proxy that appends rather than
  replaces leaves the client's own claim in front, so the last value counts.
- ``X-Forwarded-For``: the client, taken as the rightmost address that is not itself a
  trusted proxy (anything left of it could have been sent by the client).

With ``allowed_hosts`` set, a request naming another ``Host`` is refused (400): nothing here
builds URLs from it, but a server that answers any name is what DNS rebinding needs.

When TLS is required, a request that did not arrive over HTTPS is refused with a 403 problem
before any route sees it (its credentials are never checked, its body never read), except the
liveness and readiness probes, which kubelets send to the pod over plain HTTP and which carry
no credentials. HTTPS answers carry ``Strict-Transport-Security``.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from aicloud.api.problems import problem

# Paths a plain-HTTP probe may reach when TLS is required (GET/HEAD only).
PROBE_PATHS = frozenset({"/healthz", "/readyz"})
_Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def _address(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        address = ipaddress.ip_address(text.strip())
    except ValueError:
        return None
    # A dual-stack socket reports an IPv4 peer as ::ffff:a.b.c.d; compare it as IPv4.
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


class TransportSecurityMiddleware:
    def __init__(self, app: ASGIApp, *, trusted_proxies: Iterable[str], tls_required: bool,
                 hsts_max_age_seconds: int, allowed_hosts: Iterable[str] = (),
                 allowed_host_suffixes: Iterable[str] = ()):
        self.app = app
        self.allowed_hosts = frozenset(h.lower() for h in allowed_hosts)
        # Subdomains served too (the per-app hosts of access.apps_host_suffix).
        self.allowed_suffixes = tuple("." + s.lower().strip(".") for s in allowed_host_suffixes)
        self.trusted: list[_Network] = [ipaddress.ip_network(n, strict=False)
                                        for n in trusted_proxies]
        self.tls_required = tls_required
        self.hsts = f"max-age={hsts_max_age_seconds}".encode()
        self.send_hsts = tls_required and hsts_max_age_seconds > 0

    def _is_trusted(self, host: str | None) -> bool:
        address = _address(host) if host else None
        return address is not None and any(address in n for n in self.trusted)

    def _apply_forwarded_headers(self, scope: Scope) -> None:
        headers = Headers(scope=scope)
        # A header sent twice counts as one comma-separated list, in order.
        proto = ",".join(headers.getlist("x-forwarded-proto")).split(",")[-1].strip().lower()
        if proto in ("http", "https"):
            if scope["type"] == "websocket":
                proto = "wss" if proto == "https" else "ws"
            scope["scheme"] = proto
        forwarded_for = ",".join(headers.getlist("x-forwarded-for"))
        if forwarded_for:
            for hop in reversed(forwarded_for.split(",")):
                address = _address(hop)
                if address is None:
                    break  # garbage from here leftwards: keep the proxy as the client
                if not self._is_trusted(str(address)):
                    scope["client"] = (str(address), 0)
                    break

    def _host_allowed(self, scope: Scope) -> bool:
        if not self.allowed_hosts:
            return True
        host = Headers(scope=scope).get("host", "").lower()
        host = host.rsplit("]", 1)[0] + "]" if host.startswith("[") else host.split(":")[0]
        return host in self.allowed_hosts or (
            bool(self.allowed_suffixes) and host.endswith(self.allowed_suffixes))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        client = scope.get("client")
        if self.trusted and client and self._is_trusted(client[0]):
            self._apply_forwarded_headers(scope)
        secure = scope.get("scheme") in ("https", "wss")
        probe = (scope["type"] == "http" and scope.get("method") in ("GET", "HEAD")
                 and scope.get("path") in PROBE_PATHS)
        refusal = None
        if self.tls_required and not secure and not probe:
            refusal = problem(
                Request(scope), status=403, code="https-required", title="HTTPS required",
                detail="this server accepts requests over HTTPS only; nothing in this request "
                       "was processed: send it again to the https:// address")
        elif not probe and not self._host_allowed(scope):
            refusal = problem(
                Request(scope), status=400, code="unknown-host", title="Unknown host",
                detail="the Host header names a host this server does not serve "
                       "(allowed_hosts)")
        if refusal is not None:
            if scope["type"] == "websocket":
                await send({"type": "websocket.close", "code": 1008})
            else:
                await refusal(scope, receive, send)
            return
        if not (secure and self.send_hsts):
            await self.app(scope, receive, send)
            return

        async def send_with_hsts(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers.append((b"strict-transport-security", self.hsts))
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, send_with_hsts)
