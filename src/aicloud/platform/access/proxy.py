"""The proxy's decisions: who may reach which resource, through which upstream connection.

``AccessRuntime`` is one per API process. The edge (api/routes/access_proxy.py) turns ASGI
messages into calls here; everything here is transport-neutral: upstream bytes go through
the ``NodeStreams`` the composition root gives (direct TCP today, the node link later).

Every database read of the hot path is cached briefly (CACHE_SECONDS), so a burst of
requests costs no query per request: a revoked key, a stopped instance or a removed
permission takes effect within that time on other processes (at once on the process that
made the change, which drops its entries).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import anyio.to_thread

from aicloud.platform import audit, iam
from aicloud.platform.access.apps import OpenedApps, Signer, record_app_open
from aicloud.platform.access.endpoints import (
    EndpointRoute,
    KeyGrant,
    endpoint_route,
    key_grant,
)
from aicloud.platform.access.http1 import UpstreamPool
from aicloud.platform.access.metering import EndpointMeter
from aicloud.platform.access.ratelimit import RateLimiter
from aicloud.platform.access.resources import AccessTarget, resolve_resource
from aicloud.platform.access.upstream import NodeStreams
from aicloud.shared import security
from aicloud.shared.db import Database
from aicloud.shared.errors import (
    AppError,
    Conflict,
    Forbidden,
    NotFound,
    TooManyRequests,
    Unauthenticated,
)

CACHE_SECONDS = 2.0
K = TypeVar("K")
V = TypeVar("V")


class _TtlCache(Generic[K, V]):
    def __init__(self, ttl: float, size: int = 10_000):
        self.ttl, self.size = ttl, size
        self._items: OrderedDict[K, tuple[float, V]] = OrderedDict()

    def get(self, key: K) -> tuple[bool, V | None]:
        hit = self._items.get(key)
        if hit is None or hit[0] < time.monotonic():
            return False, None
        return True, hit[1]

    def put(self, key: K, value: V) -> None:
        self._items[key] = (time.monotonic() + self.ttl, value)
        self._items.move_to_end(key)
        while len(self._items) > self.size:
            self._items.popitem(last=False)

    def drop(self, pred: Callable[[K, V], bool]) -> None:
        for key in [k for k, (_, v) in self._items.items() if pred(k, v)]:
            self._items.pop(key, None)


class NotRunning(Conflict):
    """The resource exists but serves nothing now (409, with its state)."""

    code, title = "not-running", "The resource is not running"


class RateLimited(TooManyRequests):
    def __init__(self, retry_after: float):
        super().__init__(f"the key's rate limit is reached; retry in {retry_after:.1f} s")
        self.retry_after = retry_after


class UpstreamFailed(AppError):
    status, code, title = 502, "bad-gateway", "The workload did not answer properly"


class UpstreamTimedOut(AppError):
    status, code, title = 504, "gateway-timeout", "The workload did not answer in time"


@dataclass(frozen=True)
class AppAccess:
    principal: iam.Principal
    target: AccessTarget
    credential: str  # what "once per credential" is about: the session or key id


@dataclass(frozen=True)
class EndpointAccess:
    route: EndpointRoute
    grant: KeyGrant
    target: AccessTarget


@dataclass(frozen=True)
class AccessConfig:
    connect_timeout: float = 5.0
    response_timeout: float = 60.0
    apps_host_suffix: str | None = None
    apps_path_sandbox: bool = True
    max_header_bytes: int = 32 * 1024
    max_one_header_bytes: int = 16 * 1024
    max_websocket_message: int = 4 * 1024 * 1024


Slot = Callable[[], AbstractAsyncContextManager[None]]


class AccessRuntime:
    """One per API process: the upstream pool, rate limiter, meter and caches."""

    def __init__(self, db: Database, streams: NodeStreams, config: AccessConfig, *,
                 secret_key: str, credential_usage: iam.CredentialUsage | None = None):
        self.db = db
        self.config = config
        self.pool = UpstreamPool(streams, connect_timeout=config.connect_timeout,
                                 response_timeout=config.response_timeout)
        self.limiter = RateLimiter(db)
        self.meter = EndpointMeter()
        self.opened = OpenedApps()
        self.tickets = Signer(secret_key, "app-ticket")
        self.app_cookies = Signer(secret_key, "app-cookie")
        self.credential_usage = credential_usage
        self._apps: _TtlCache[tuple[str, str], AppAccess] = _TtlCache(CACHE_SECONDS)
        self._grants: _TtlCache[str, KeyGrant | None] = _TtlCache(CACHE_SECONDS)
        self._routes: _TtlCache[str, EndpointRoute | None] = _TtlCache(CACHE_SECONDS)
        self._targets: _TtlCache[str, AccessTarget] = _TtlCache(CACHE_SECONDS / 2)

    async def _read(self, slot: Slot, fn: Callable[[Any], V]) -> V:
        async with slot():
            return await anyio.to_thread.run_sync(self._read_sync, fn)

    def _read_sync(self, fn: Callable[[Any], V]) -> V:
        with self.db.read_transaction() as session:
            return fn(session)

    # --- browser apps ---------------------------------------------------------------------

    async def open_app(self, token: str | None, resource_id: str, *, slot: Slot,
                       actor: Callable[[iam.Principal], audit.Actor]) -> AppAccess:
        """The caller may open the resource's app and it runs; audited once per
        credential. Unknown resource or no access: NotFound; no credential: 401."""
        if not token:
            raise Unauthenticated("log in to open this app")
        key = (security.token_digest(token), resource_id)
        hit, access = self._apps.get(key)
        if not hit or access is None:
            access = await self._read(slot, lambda s: self._authorize_app(s, token,
                                                                          resource_id))
            self._apps.put(key, access)
        if not access.target.running:
            raise NotRunning(f"{access.target.resource_type} {resource_id} is "
                             f"{access.target.state}", state=access.target.state)
        await self._audit_open(access, slot, actor(access.principal), mode="path")
        return access

    def _authorize_app(self, session: Any, token: str, resource_id: str) -> AppAccess:
        principal = iam.resolve_token(session, token, usage=self.credential_usage)
        return self._check_app(session, principal, resource_id)

    def _check_app(self, session: Any, principal: iam.Principal,
                   resource_id: str) -> AppAccess:
        target = resolve_resource(session, resource_id)
        snap = iam.policy_snapshot(session)
        if not snap.authorize(principal, target.open_permission, target.ref).allowed:
            if not snap.has_any_grant(principal, target.ref):
                raise NotFound("not found")
            raise Forbidden(f"{target.open_permission} is required on {resource_id}")
        credential = principal.session_id or principal.api_key_id or principal.id
        return AppAccess(principal=principal, target=target, credential=credential)

    async def open_app_as(self, principal: iam.Principal, resource_id: str, *, slot: Slot,
                          actor: audit.Actor, credential: str) -> AppAccess:
        """Subdomain mode: the principal named by a verified app cookie."""
        key = ("cookie:" + credential + ":" + principal.id, resource_id)
        hit, access = self._apps.get(key)
        if not hit or access is None:
            access = await self._read(slot, lambda s: self._check_app(s, principal,
                                                                      resource_id))
            access = AppAccess(access.principal, access.target, credential)
            self._apps.put(key, access)
        if not access.target.running:
            raise NotRunning(f"{access.target.resource_type} {resource_id} is "
                             f"{access.target.state}", state=access.target.state)
        await self._audit_open(access, slot, actor, mode="subdomain")
        return access

    async def _audit_open(self, access: AppAccess, slot: Slot, actor: audit.Actor,
                          mode: str) -> None:
        if not self.opened.first_time(access.credential, access.target.id):
            return
        try:
            async with slot():
                await anyio.to_thread.run_sync(self._record_open, access.target, actor, mode)
        except BaseException:
            self.opened.forget(access.credential, access.target.id)
            raise

    def _record_open(self, target: AccessTarget, actor: audit.Actor, mode: str) -> None:
        with self.db.transaction() as session:
            record_app_open(session, target, actor=actor, mode=mode)

    # --- API endpoints --------------------------------------------------------------------

    async def call_endpoint(self, name: str, secret: str | None, *, slot: Slot
                            ) -> EndpointAccess:
        """A request to ``/endpoints/{name}/``: the endpoint exists (404), the key is one of
        its valid keys (401), within its rate (429), the resource runs (409)."""
        hit, route = self._routes.get(name)
        if not hit:
            route = await self._read(slot, lambda s: endpoint_route(s, name))
            self._routes.put(name, route)
        if route is None:
            raise NotFound(f"no endpoint named {name}")
        if not secret:
            raise Unauthenticated("send the endpoint's key: Authorization: Bearer aiep_...")
        digest = security.token_digest(secret)
        hit, grant = self._grants.get(digest)
        if not hit:
            grant = await self._read(slot, lambda s: key_grant(s, secret))
            self._grants.put(digest, grant)
        if grant is None or grant.endpoint_id != route.id:
            raise Unauthenticated("the key is not valid for this endpoint")
        wait = await self.limiter.acquire(grant)
        if wait is not None:
            raise RateLimited(wait)
        rid = route.resource_id
        hit, target = self._targets.get(rid)
        if not hit or target is None:
            target = await self._read(slot, lambda s: resolve_resource(s, rid))
            self._targets.put(rid, target)
        if not target.running:
            raise NotRunning(f"the endpoint's {target.resource_type} is {target.state}",
                             state=target.state)
        return EndpointAccess(route=route, grant=grant, target=target)

    def count(self, access: EndpointAccess, status: int) -> None:
        self.meter.count(endpoint_id=access.route.id, key_id=access.grant.key_id,
                         project_id=access.route.project_id,
                         scope_path=access.route.scope_path,
                         principal_id=access.grant.created_by, status=status)

    def forget_key(self, key_id: str) -> None:
        """This process revoked the key: refuse it at once here."""
        self._grants.drop(lambda _k, v: v is not None and v.key_id == key_id)
        self.limiter.forget(key_id)

    def forget_endpoint(self, endpoint_id: str) -> None:
        self._routes.drop(lambda _k, v: v is not None and v.id == endpoint_id)
        self._grants.drop(lambda _k, v: v is not None and v.endpoint_id == endpoint_id)

    async def aclose(self) -> None:
        await self.pool.close()
