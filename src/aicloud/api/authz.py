"""Route access declarations: every route says who may call it, through one dependency.

Three kinds, and ``create_app`` refuses to start when a route has none of them:

- ``PUBLIC``: no authentication (health, login, accepting an invitation);
- ``AUTHENTICATED``: any valid session or API key; the route filters what it returns
  (listings) or acts only on the caller's own things (logout, me, own API keys);
- ``Authorize("svc.res.verb", scope=...)``: the caller must hold the permission on the
  scope the route names, e.g. ``scope=path_param("project_id")``.

When the caller may not even know the target exists (no binding anywhere on its path), the
answer is 404, never 403, so another tenant's ids reveal nothing. Routes receive a
``Caller`` to make further checks (``caller.require``) and to build audit actors.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Request
from fastapi.routing import APIRoute, APIWebSocketRoute, iter_route_contexts
from sqlalchemy.orm import Session
from starlette.routing import Mount, Route

from aicloud.api.deps import DbSession, request_actor
from aicloud.platform import audit, iam
from aicloud.shared.errors import Forbidden, NotFound, Unauthenticated
from aicloud.shared.ids import id_prefix

_READ_PERMISSIONS = {"org": "iam.orgs.read", "department": "iam.departments.read",
                     "project": "iam.projects.read"}


@dataclass
class Caller:
    """The authenticated principal of a request, with the request's transaction."""

    principal: iam.Principal
    session: Session
    actor: audit.Actor
    _snapshot: iam.Snapshot | None = field(default=None, repr=False)

    @property
    def id(self) -> str:
        return self.principal.id

    def snapshot(self) -> iam.Snapshot:
        # One snapshot per request unless this request changed the policy itself.
        if self._snapshot is None or iam.has_uncommitted_policy_changes(self.session):
            self._snapshot = iam.policy_snapshot(self.session)
        return self._snapshot

    def authorize(self, permission: str, target: iam.Target) -> iam.Decision:
        return self.snapshot().authorize(self.principal, permission, target)

    def can(self, permission: str, target: iam.Target) -> bool:
        return self.authorize(permission, target).allowed

    def require(self, permission: str, target: iam.Target, *, hidden: bool = True) -> None:
        """Raise unless allowed: 404 when the caller may not know the target exists (or
        ``hidden`` and the target is the platform, i.e. a tenant object with no tenant
        scope the caller can see), else 403."""
        decision = self.authorize(permission, target)
        if decision.allowed:
            return
        snap = self.snapshot()
        if target == iam.PLATFORM:
            if hidden:
                raise NotFound("not found")
            raise Forbidden(f"{permission} is required")
        if not snap.has_any_grant(self.principal, target):
            raise NotFound("not found")
        raise Forbidden(f"{permission} is required on {target}")

    def visible(self, permission: str, kind: str) -> list[str]:
        return self.snapshot().visible(self.principal, permission, kind)

    def visible_scope_paths(self, permission: str) -> list[str] | None:
        """Scope path prefixes the caller may read path-scoped records under (None = all)."""
        return self.snapshot().visible_scope_paths(self.principal, permission)


def authenticate(request: Request, session: Session) -> Caller:
    from aicloud.api.deps import bearer_token

    token = bearer_token(request)
    if not token:
        raise Unauthenticated("send a bearer token or log in")
    # The use is noted for the background flusher (iam/last_used.py): resolving only reads.
    principal = iam.resolve_token(session, token,
                                  usage=request.app.state.context.credential_usage)
    request.state.principal = principal
    return Caller(principal=principal, session=session, actor=request_actor(request, principal))


# --- scope resolvers: a route parameter -> the target to authorize on ------------------------

Resolver = Callable[[Caller, str], "iam.Target"]
_RESOLVERS: dict[str, Resolver] = {}


def register_scope_resolver(prefix: str, resolver: Resolver) -> None:
    """Teach ``path_param`` where objects with this id prefix live (products register their
    resources, e.g. ``inst`` -> ResourceRef). The resolver raises NotFound for unknown ids."""
    _RESOLVERS[prefix] = resolver


def resolve_target(caller: Caller, value: str) -> iam.Target:
    if value == iam.PLATFORM:
        return iam.PLATFORM
    prefix = id_prefix(value) or ""
    if prefix in ("org", "dep", "prj"):
        if not caller.snapshot().exists(value):
            raise NotFound("not found")
        return value
    resolver = _RESOLVERS.get(prefix)
    if resolver is None:
        raise NotFound("not found")
    return resolver(caller, value)


@dataclass(frozen=True)
class ScopeFrom:
    """Where a route's target comes from: a path or query parameter, or the platform."""

    source: str  # "path" | "query" | "platform"
    name: str = ""

    def resolve(self, request: Request, caller: Caller) -> iam.Target:
        if self.source == "platform":
            return iam.PLATFORM
        params = request.path_params if self.source == "path" else request.query_params
        value = params.get(self.name)
        if not value:
            raise NotFound("not found")
        return resolve_target(caller, str(value))


def path_param(name: str) -> ScopeFrom:
    return ScopeFrom("path", name)


def query_param(name: str) -> ScopeFrom:
    return ScopeFrom("query", name)


PLATFORM_SCOPE = ScopeFrom("platform")


# --- the declarations ------------------------------------------------------------------------


class RouteAccess:
    """Base of the access declarations the startup check looks for."""

    kind = "?"

    def describe(self) -> str:
        return self.kind


class _Public(RouteAccess):
    kind = "public"

    def __call__(self) -> None:
        return None


class _Authenticated(RouteAccess):
    kind = "authenticated"

    def __call__(self, request: Request, session: DbSession) -> Caller:
        return authenticate(request, session)


class _Authorize(RouteAccess):
    kind = "authorize"

    def __init__(self, permission: str, scope: ScopeFrom):
        if permission not in iam.CATALOG:
            raise ValueError(f"route permission {permission!r} is not declared")
        self.permission = permission
        self.scope = scope

    def describe(self) -> str:
        where = self.scope.name or self.scope.source
        return f"{self.permission} on {where}"

    def __call__(self, request: Request, session: DbSession) -> Caller:
        caller = authenticate(request, session)
        target = self.scope.resolve(request, caller)
        caller.require(self.permission, target, hidden=self.scope.source != "platform")
        request.state.target = target
        return caller


PUBLIC = Depends(_Public())
AUTHENTICATED = Depends(_Authenticated())
Authenticated = Annotated[Caller, AUTHENTICATED]


def Authorize(permission: str, *, scope: ScopeFrom) -> Any:
    """Use as ``caller: Annotated[Caller, Authorize("iam.projects.read",
    scope=path_param("project_id"))]``."""
    return Depends(_Authorize(permission, scope))


# --- the startup check -----------------------------------------------------------------------


class UndeclaredRouteAccess(RuntimeError):
    pass


def route_access(route: Any) -> RouteAccess | None:
    stack = list(route.dependant.dependencies)
    while stack:
        dep = stack.pop()
        if isinstance(dep.call, RouteAccess):
            return dep.call
        stack.extend(dep.dependencies)
    return None


def check_route_declarations(app: FastAPI) -> dict[str, str]:
    """Every route declares its access or the app does not start. Returns the table
    ``"METHOD /path" -> declaration`` (also what the isolation tests walk)."""
    framework = {app.openapi_url, app.docs_url, app.redoc_url, app.swagger_ui_oauth2_redirect_url}
    table: dict[str, str] = {}
    missing: list[str] = []
    for context in iter_route_contexts(app.routes):
        original = context.original_route
        if isinstance(original, APIRoute):
            access = route_access(context)
            for method in sorted(context.methods or ()):
                key = f"{method} {context.path}"
                if access is None:
                    missing.append(key)
                else:
                    table[key] = access.describe()
        elif isinstance(original, APIWebSocketRoute):
            access = route_access(context)
            if access is None:
                missing.append(f"WEBSOCKET {context.path}")
            else:
                table[f"WEBSOCKET {context.path}"] = access.describe()
        elif isinstance(original, Route) and context.path in framework:
            table[f"GET {context.path}"] = "public"
        elif isinstance(original, Mount) and isinstance(
                getattr(original.app, "access", None), RouteAccess):
            # A mounted ASGI app (the proxies) declares its access as a whole.
            table[f"* {original.path}/..."] = original.app.access.describe()
        else:
            missing.append(str(context.path or repr(original)))
    if missing:
        raise UndeclaredRouteAccess(
            "routes without an access declaration (use PUBLIC, AUTHENTICATED or "
            "Authorize(...) from aicloud.api.authz): " + ", ".join(sorted(missing)))
    return table
