"""What the proxy changes in the headers it passes, in both directions.

To the workload: hop-by-hop headers go (RFC 9110 7.6.1, plus every name the client's
Connection header lists); the platform's credentials never pass (the Authorization header,
and the platform's session cookie out of Cookie); forwarding headers the client sent are
replaced by ours (X-Forwarded-For/-Host/-Proto/-Prefix), so the app learns where it is
mounted and cannot be lied to by the client.

To the browser: hop-by-hop headers go; a redirect stays under the app's prefix (a Location
on the app's own host, relative or absolute, is mapped under the prefix; one to another host
is refused, never passed: RedirectRefused, answered 502); cookies stay under the prefix
(Path rewritten, Domain dropped so no app sets cookies for its siblings or the platform, and
a cookie named like the platform's session cookie is dropped); the app cannot set HSTS for
the platform's host.
"""

from __future__ import annotations

from collections.abc import Iterable
from urllib.parse import urljoin, urlsplit, urlunsplit

Headers = list[tuple[bytes, bytes]]

HOP_BY_HOP = frozenset({b"connection", b"keep-alive", b"proxy-authenticate",
                        b"proxy-authorization", b"proxy-connection", b"te", b"trailer",
                        b"transfer-encoding", b"upgrade"})
# Replaced by the proxy's own values, never taken from the client.
_FORWARDING = frozenset({b"forwarded", b"x-forwarded-for", b"x-forwarded-host",
                         b"x-forwarded-proto", b"x-forwarded-prefix", b"x-forwarded-port",
                         b"x-real-ip"})
# Headers of a WebSocket handshake the upstream side makes itself.
_WEBSOCKET_HANDSHAKE = frozenset({b"sec-websocket-key", b"sec-websocket-version",
                                  b"sec-websocket-extensions", b"sec-websocket-protocol",
                                  b"sec-websocket-accept"})
# Path mode: the app's pages get an opaque origin, so their scripts can neither send the
# user's platform cookie to the API (cross-site: SameSite=Lax withholds it) nor read its
# answers (no CORS). See docs/access.md for what this costs apps.
SANDBOX_CSP = (b"sandbox allow-scripts allow-forms allow-popups allow-modals "
               b"allow-downloads allow-popups-to-escape-sandbox")


class RedirectRefused(Exception):
    """The workload redirected off its prefix, to another host."""


class HeadersTooLarge(Exception):
    """The request's headers exceed the proxy's limits."""


def _connection_tokens(headers: Iterable[tuple[bytes, bytes]]) -> set[bytes]:
    out: set[bytes] = set()
    for name, value in headers:
        if name.lower() == b"connection":
            out |= {t.strip().lower() for t in value.split(b",") if t.strip()}
    return out


def check_header_size(headers: Iterable[tuple[bytes, bytes]], *, max_total: int,
                      max_one: int) -> None:
    total = 0
    for name, value in headers:
        size = len(name) + len(value) + 4
        if size > max_one:
            raise HeadersTooLarge(f"header {name.decode('latin-1')[:40]} is over "
                                  f"{max_one} bytes")
        total += size
    if total > max_total:
        raise HeadersTooLarge(f"request headers are over {max_total} bytes")


def strip_cookie(value: bytes, name: bytes) -> bytes:
    """The Cookie header without the named cookie (every occurrence)."""
    kept = [part.strip() for part in value.split(b";")
            if part.strip() and part.strip().split(b"=", 1)[0].strip() != name]
    return b"; ".join(kept)


def upstream_request_headers(headers: Iterable[tuple[bytes, bytes]], *, session_cookie: bytes,
                             prefix: str, client_ip: str | None, proto: str, host: bytes,
                             websocket: bool = False) -> Headers:
    """The request's headers as the workload receives them (see the module docstring).
    Framing (Content-Length / Transfer-Encoding) is the caller's to add."""
    headers = list(headers)
    drop = HOP_BY_HOP | _connection_tokens(headers) | _FORWARDING | {
        b"authorization", b"content-length", b"host"}
    if websocket:
        drop |= _WEBSOCKET_HANDSHAKE
    out: Headers = [(b"host", host)]
    for name, value in headers:
        lname = name.lower()
        if lname in drop:
            continue
        if lname == b"cookie":
            value = strip_cookie(value, session_cookie)
            if not value:
                continue
        out.append((lname, value))
    # The client's address as the API believed it (trusted proxies already applied), never
    # the client's own X-Forwarded-For.
    if client_ip:
        out.append((b"x-forwarded-for", client_ip.encode("latin-1")))
    out.append((b"x-forwarded-host", host))
    out.append((b"x-forwarded-proto", proto.encode("latin-1")))
    out.append((b"x-forwarded-prefix", prefix.encode("latin-1") or b"/"))
    return out


def rewrite_location(value: bytes, *, prefix: str, upstream_path: str,
                     own_hosts: Iterable[str]) -> bytes:
    """Map a redirect target under ``prefix``. ``upstream_path`` is the path the workload
    was asked for (what a relative Location is resolved against); ``own_hosts`` are the
    hosts that mean the workload itself (the Host it was sent, its own address)."""
    text = value.decode("latin-1").strip()
    base = "http://upstream" + (upstream_path or "/")
    resolved = urlsplit(urljoin(base, text))
    hosts = {h.lower() for h in own_hosts} | {"upstream"}
    if resolved.netloc.lower() not in hosts:
        raise RedirectRefused(f"the app redirected to another host ({resolved.netloc!r})")
    path = resolved.path or "/"
    if prefix and not (path == prefix or path.startswith(prefix + "/")):
        path = prefix + path
    return urlunsplit(("", "", path, resolved.query, resolved.fragment)).encode("latin-1")


def rewrite_set_cookie(value: bytes, *, prefix: str, session_cookie: bytes) -> bytes | None:
    """The cookie kept under ``prefix`` (None: dropped)."""
    parts = [p.strip() for p in value.split(b";")]
    name = parts[0].split(b"=", 1)[0].strip()
    if not name or name == session_cookie:
        return None
    attrs: list[bytes] = []
    path_seen = False
    for attr in parts[1:]:
        key = attr.split(b"=", 1)[0].strip().lower()
        if key == b"domain":
            continue  # host-only: an app never sets cookies for its siblings or the platform
        if key == b"path":
            path_seen = True
            path = attr.split(b"=", 1)[1].strip() if b"=" in attr else b"/"
            if not path.startswith(b"/"):
                path = b"/"
            if prefix:
                p = prefix.encode("latin-1")
                if not (path == p or path.startswith(p + b"/")):
                    path = p + path
            attr = b"Path=" + path
        attrs.append(attr)
    if not path_seen:
        attrs.append(b"Path=" + ((prefix.encode("latin-1") + b"/") if prefix else b"/"))
    return b"; ".join([parts[0], *attrs])


def downstream_response_headers(headers: Iterable[tuple[bytes, bytes]], *, prefix: str,
                                upstream_path: str, own_hosts: Iterable[str],
                                session_cookie: bytes, sandbox: bool) -> Headers:
    """The workload's response headers as the browser receives them."""
    headers = list(headers)
    drop = HOP_BY_HOP | _connection_tokens(headers) | {b"strict-transport-security"}
    out: Headers = []
    hosts = list(own_hosts)
    for name, value in headers:
        lname = name.lower()
        if lname in drop:
            continue
        if lname in (b"location", b"content-location"):
            value = rewrite_location(value, prefix=prefix, upstream_path=upstream_path,
                                     own_hosts=hosts)
        elif lname == b"set-cookie":
            kept = rewrite_set_cookie(value, prefix=prefix, session_cookie=session_cookie)
            if kept is None:
                continue
            value = kept
        out.append((lname, value))
    if sandbox:
        out.append((b"content-security-policy", SANDBOX_CSP))
    return out


def endpoint_request_headers(headers: Iterable[tuple[bytes, bytes]], *, prefix: str,
                             client_ip: str | None, proto: str, host: bytes) -> Headers:
    """An API endpoint's request: the endpoint key (Authorization / X-Api-Key) and any
    cookie stay with the platform."""
    out = upstream_request_headers(
        [(n, v) for n, v in headers if n.lower() not in (b"cookie", b"x-api-key")],
        session_cookie=b"", prefix=prefix, client_ip=client_ip, proto=proto, host=host)
    return out


def endpoint_response_headers(headers: Iterable[tuple[bytes, bytes]], *, prefix: str,
                               upstream_path: str, own_hosts: Iterable[str]) -> Headers:
    """An API endpoint's response: hop-by-hop and cookie-setting headers go (a key's client
    has no business with the workload's cookies on the platform's host); a Location stays
    under the endpoint's prefix."""
    headers = list(headers)
    drop = HOP_BY_HOP | _connection_tokens(headers) | {b"strict-transport-security",
                                                         b"set-cookie"}
    out: Headers = []
    for name, value in headers:
        lname = name.lower()
        if lname in drop:
            continue
        if lname in (b"location", b"content-location"):
            value = rewrite_location(value, prefix=prefix, upstream_path=upstream_path,
                                     own_hosts=own_hosts)
        out.append((lname, value))
    return out
