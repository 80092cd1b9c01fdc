"""Where budget webhooks may go: public addresses only, unless an operator allows more.

A tenant admin chooses a budget's webhook URL and the platform POSTs to it, so without a
check any tenant could make the control plane call its own internal services (the metadata
endpoint of the cloud it runs on, an admin port on 127.0.0.1, the database's host). Refused:
loopback, private, link-local, multicast, unspecified, reserved, shared (CGNAT) and other
non-global addresses, and the cloud metadata addresses, in IPv4 and IPv6, including IPv4
inside IPv6 (mapped ``::ffff:a.b.c.d``, NAT64 ``64:ff9b::/96``, 6to4 ``2002::/16``) and hosts
written as decimal, octal or hex numbers (``2130706433``, ``0177.0.0.1``, ``0x7f.1``).

The check runs when the budget is created and again at every delivery, after resolving the
host: the delivery connects to the address that was checked (never resolving the name a
second time), so DNS rebinding cannot switch it, and redirects are not followed. Strict
profiles also require https. ``webhook_allowed_targets`` (config) lists the exceptions:
CIDRs whose addresses are allowed, or host names allowed whatever they resolve to.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from aicloud.shared.errors import ValidationFailed

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = Callable[[str, int], list[str]]

# Metadata services answer on these even where the general rules would not catch them.
METADATA_ADDRESSES = frozenset(map(ipaddress.ip_address, (
    "169.254.169.254",  # AWS, GCP, Azure, OpenStack, DigitalOcean...
    "169.254.170.2",  # AWS ECS task metadata
    "100.100.100.200",  # Alibaba Cloud
    "192.0.0.192",  # Oracle Cloud
    "fd00:ec2::254",  # AWS over IPv6
)))
NAT64 = ipaddress.ip_network("64:ff9b::/96")


class WebhookTargetRefused(ValidationFailed):
    code = "webhook-target-refused"
    title = "The webhook URL is not an allowed target"


class WebhookTargetUnresolved(WebhookTargetRefused):
    """The host does not resolve (now): not a verdict on the address, so a delivery retries."""


def _system_resolver(host: str, port: int) -> list[str]:
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


@dataclass(frozen=True)
class WebhookPolicy:
    """What the deployment allows: ``require_https`` (strict profiles) and ``allow``, the
    configured exceptions (CIDRs or host names)."""

    require_https: bool = False
    allow: tuple[str, ...] = ()
    resolver: Resolver = field(default=_system_resolver, repr=False, compare=False)

    def __post_init__(self) -> None:
        for entry in self.allow:
            if not entry.strip():
                raise ValueError("webhook_allowed_targets has an empty entry")
            if _looks_like_network(entry):
                ipaddress.ip_network(entry.strip(), strict=False)  # ValueError if malformed

    @property
    def networks(self) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
        return [ipaddress.ip_network(e.strip(), strict=False) for e in self.allow
                if _looks_like_network(e)]

    @property
    def hosts(self) -> set[str]:
        return {e.strip().lower().rstrip(".") for e in self.allow if not _looks_like_network(e)}


def _looks_like_network(entry: str) -> bool:
    try:
        ipaddress.ip_network(entry.strip(), strict=False)
        return True
    except ValueError:
        return False


@dataclass(frozen=True)
class Target:
    """A checked destination: connect to ``ip``, say ``host`` (Host header, TLS SNI)."""

    url: str
    scheme: str
    host: str
    port: int
    ip: str

    @property
    def connect_url(self) -> str:
        """The URL with the checked address in place of the host name."""
        parts = urlsplit(self.url)
        netloc = f"[{self.ip}]" if ":" in self.ip else self.ip
        target = parts._replace(netloc=f"{netloc}:{self.port}")
        return target.geturl()

    @property
    def host_header(self) -> str:
        default = 443 if self.scheme == "https" else 80
        name = f"[{self.host}]" if ":" in self.host else self.host
        return name if self.port == default else f"{name}:{self.port}"


def forbidden_reason(ip: IPAddress) -> str | None:
    """Why an address may not receive webhooks (None when it may)."""
    if isinstance(ip, ipaddress.IPv6Address):
        embedded = ip.ipv4_mapped or ip.sixtofour
        if embedded is None and ip in NAT64:
            embedded = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
        if embedded is not None:
            inner = forbidden_reason(embedded)
            return f"{inner} (inside {ip})" if inner else None
    if ip in METADATA_ADDRESSES:
        return f"{ip} is a cloud metadata address"
    for name in ("loopback", "unspecified", "link_local", "multicast", "private", "reserved"):
        if getattr(ip, f"is_{name}"):
            return f"{ip} is a {name.replace('_', '-')} address"
    if not ip.is_global:
        return f"{ip} is not a public address"
    return None


def _numeric_host(host: str) -> IPAddress | None:
    """A host written as an address, in any form a resolver would accept (dotted, but also
    decimal ``2130706433``, octal ``0177.0.0.1``, hex ``0x7f.1``, short ``127.1``)."""
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        pass
    if host and all(c in "0123456789abcdefx." for c in host.lower()) and any(
            c.isdigit() for c in host):
        try:
            return ipaddress.IPv4Address(socket.inet_aton(host))
        except OSError:
            return None
    return None


def parse_url(url: str, policy: WebhookPolicy, field: str = "webhook_url",
              ) -> tuple[str, str, int]:
    """(scheme, host, port) of a webhook URL, or ValidationFailed."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise ValidationFailed(f"{field} is not a URL: {exc}", field=field) from None
    scheme = parts.scheme.lower()
    allowed = ("https",) if policy.require_https else ("http", "https")
    if scheme not in allowed:
        raise ValidationFailed(f"{field} must be an {' or '.join(allowed)} URL", field=field)
    if parts.username is not None or parts.password is not None:
        raise ValidationFailed(f"{field} may not carry credentials", field=field)
    host = (parts.hostname or "").rstrip(".")
    if not host:
        raise ValidationFailed(f"{field} has no host", field=field)
    return scheme, host, port or (443 if scheme == "https" else 80)


def check_target(url: str, policy: WebhookPolicy, field: str = "webhook_url", *,
                 unresolved_ok: bool = False) -> Target | None:
    """Resolve the URL's host and check every address it resolves to; the Target names the
    first, which is where the delivery connects. With ``unresolved_ok`` (creating a budget) a
    host that does not resolve yet passes (None): each delivery checks it again anyway."""
    scheme, host, port = parse_url(url, policy, field)
    host_allowed = host.lower() in policy.hosts
    numeric = _numeric_host(host)
    if numeric is not None:
        addresses: Iterable[str] = [str(numeric)]
    else:
        try:
            addresses = policy.resolver(host, port)
        except OSError as exc:
            if unresolved_ok:
                return None
            raise WebhookTargetUnresolved(f"{field}: {host} does not resolve ({exc})",
                                          field=field) from None
    checked: list[str] = []
    for text in addresses:
        ip = ipaddress.ip_address(text.split("%", 1)[0])  # drop an IPv6 zone id
        reason = forbidden_reason(ip)
        if reason and not host_allowed and not any(
                ip.version == n.version and ip in n for n in policy.networks):
            raise WebhookTargetRefused(
                f"{field}: {host} resolves to {reason}; webhooks go to public addresses "
                "(an operator can allow exceptions with webhook_allowed_targets)",
                field=field, address=str(ip))
        checked.append(str(ip))
    if not checked:
        raise WebhookTargetRefused(f"{field}: {host} resolves to no address", field=field)
    return Target(url=url, scheme=scheme, host=host, port=port, ip=checked[0])
