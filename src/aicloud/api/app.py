"""The FastAPI application factory."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from prometheus_client import CollectorRegistry

from aicloud import __version__
from aicloud.api import (
    access_scopes,  # noqa: F401  (registers access's scope resolvers)
    gpuaas_scopes,  # noqa: F401  (registers GPUaaS's scope resolvers)
    iam_scopes,  # noqa: F401  (registers IAM's scope resolvers)
)
from aicloud.api.authz import check_route_declarations
from aicloud.api.json_body import StrictJsonBodyMiddleware
from aicloud.api.middleware import RequestContextMiddleware, RequestMetrics
from aicloud.api.problems import install_problem_handlers
from aicloud.api.prometheus_gpus import GpuGauges
from aicloud.api.routes import (
    access_endpoints,
    agent_link,
    audit,
    auth,
    billing_budgets,
    billing_catalog,
    billing_holds,
    billing_wallet,
    gpuaas_instances,
    gpuaas_metrics,
    gpuaas_nodes,
    health,
    iam_access,
    iam_hierarchy,
    iam_principals,
    policy_idle,
    policy_quotas,
)
from aicloud.api.routes.access_proxy import (
    APPS_PREFIX,
    ENDPOINTS_PREFIX,
    AppHostMiddleware,
    AppProxy,
    EndpointProxy,
)
from aicloud.api.server import RequestSlots, concurrency, set_thread_limit
from aicloud.api.transport import TransportSecurityMiddleware
from aicloud.runtime import AppContext
from aicloud.shared.controllers import ControllerRunner

API_TITLE = "AI Cloud API"
log = logging.getLogger(__name__)


def create_app(ctx: AppContext, *, run_controllers: bool = False) -> FastAPI:
    """Build the API. With ``run_controllers`` the background controllers run in-process
    (``aicloud serve``); otherwise they run in ``aicloud worker``."""
    runner = ControllerRunner(ctx.controllers() if run_controllers else [])
    # What every API process runs beside its requests (policy watcher, credential uses).
    watchers = ControllerRunner(ctx.serving_controllers())
    limits = concurrency(ctx.db)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        check_route_declarations(app)  # routes added after create_app are checked too
        set_thread_limit(limits.threads)
        ctx.prepare_products()
        watchers.start()
        runner.start()
        try:
            yield
        finally:
            runner.stop()
            watchers.stop()
            try:  # a clean stop loses no credential use (a crash loses the last interval's)
                ctx.credential_usage.flush(ctx.db)
            except Exception:
                log.exception("could not write the last credential uses")
            try:  # nor an endpoint request served (billed = served)
                ctx.access.meter.flush(ctx.db)
            except Exception:
                log.exception("could not bill the last endpoint requests")
            await ctx.access.aclose()

    settings = ctx.settings
    app = FastAPI(
        title=API_TITLE,
        # Strict profiles do not publish the interactive docs (contracts/openapi.json is the
        # published contract); app.openapi() still builds the document.
        docs_url="/docs" if settings.docs_enabled else None,
        redoc_url="/redoc" if settings.docs_enabled else None,
        openapi_url="/openapi.json" if settings.docs_enabled else None,
        version=__version__,
        description="Control plane for a multi-tenant GPU cloud. Errors are RFC 9457 "
                    "problem+json; POSTs that create or spend accept an Idempotency-Key.",
        lifespan=lifespan,
    )
    app.state.context = ctx
    app.state.controller_runner = runner
    app.state.serving_runner = watchers
    app.state.metrics_registry = CollectorRegistry()
    app.state.metrics_registry.register(GpuGauges(ctx.db, ctx.clock.now))
    # Inside: its 422 carries the request id. The proxies' bodies are the workloads' own.
    app.add_middleware(StrictJsonBodyMiddleware,
                       passthrough=(APPS_PREFIX + "/", ENDPOINTS_PREFIX + "/"))
    app.state.request_slots = slots = RequestSlots(limits.request_slots,
                                                   limits.slot_wait_seconds)
    # Subdomain mode: requests to an app's own host go to the app, never to the API.
    app.add_middleware(AppHostMiddleware, ctx=ctx, slots=slots)
    # Added before the request-id middleware, so it runs inside it: a refused request has an id.
    suffix = settings.access.apps_host_suffix
    app.add_middleware(TransportSecurityMiddleware, trusted_proxies=settings.trusted_proxies,
                       tls_required=settings.tls_required,
                       hsts_max_age_seconds=settings.hsts_max_age_seconds,
                       allowed_hosts=settings.allowed_hosts,
                       allowed_host_suffixes=[suffix] if suffix else [])
    app.add_middleware(RequestContextMiddleware, metrics=RequestMetrics(app.state.metrics_registry))
    install_problem_handlers(app)
    # First in the route table: the router tries routes in order, and proxied requests are
    # the many small ones (matching them after ~70 routes cost a third of their CPU).
    app.mount(APPS_PREFIX, AppProxy(ctx, slots))
    app.mount(ENDPOINTS_PREFIX, EndpointProxy(ctx, slots))
    app.include_router(health.router)
    app.include_router(auth.router)
    app.include_router(iam_hierarchy.router)
    app.include_router(iam_principals.router)
    app.include_router(iam_access.router)
    app.include_router(audit.router)
    app.include_router(gpuaas_instances.router)
    app.include_router(gpuaas_metrics.router)
    app.include_router(gpuaas_nodes.router)
    app.include_router(agent_link.router)
    app.include_router(policy_quotas.router)
    app.include_router(policy_idle.router)
    app.include_router(billing_wallet.router)
    app.include_router(billing_budgets.router)
    app.include_router(billing_catalog.router)
    app.include_router(billing_holds.router)
    app.include_router(access_endpoints.router)
    # Refuse to build an app with a route that does not declare who may call it.
    app.state.route_access = check_route_declarations(app)
    return app
