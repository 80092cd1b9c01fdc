"""Access composition: which resources access may reach, how, and its meter and prices.

GPUaaS instances are the resources today: this root registers their resolver (access
never imports a product), declares ``endpoint_requests`` in billing and, where the profile
seeds demo prices, prices it. The upstream transport is chosen here too: ``DirectStreams``
(TCP to the instance's recorded endpoint on this host) until the node link provides one.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from sqlalchemy.orm import Session

from aicloud.platform import access, audit, billing, iam
from aicloud.products import gpuaas
from aicloud.shared.config import Settings
from aicloud.shared.controllers import Controller
from aicloud.shared.db import Database

log = logging.getLogger(__name__)
SEED_ACTOR = audit.Actor.system("seed")
OPEN_APP = "gpuaas.instances.open_app"


def _instance(session: Session, instance_id: str) -> access.AccessTarget:
    m = gpuaas.get_instance_model(session, instance_id)
    return access.AccessTarget(
        resource_type="instance", id=m.id, project_id=m.project_id, scope_path=m.scope_path,
        state=m.state, running=m.state == gpuaas.InstanceState.RUNNING and bool(m.endpoint_url),
        node_id=m.node_id, endpoint=m.endpoint_url, kind=m.template,
        open_permission=OPEN_APP)


def register_resources() -> None:
    access.register_resource("inst", "instance", _instance, publishable=("api-app",))
    # A published endpoint keeps its project (and the org above it) from being deleted or
    # moved: its keys and meter would otherwise bill a scope that no longer exists.
    iam.register_deletion_guard("access.endpoints", lambda session, path: [
        iam.LiveResource(kind="access.endpoint", id=m.id, state="published",
                         scope_path=m.scope_path)
        for m in access.endpoints_under(session, path)])


def endpoint_scope(session: Session, endpoint_id: str) -> iam.Target:
    """Where an endpoint lives in the scope tree (its project)."""
    return access.get_endpoint_model(session, endpoint_id).project_id


def endpoint_key_scope(session: Session, key_id: str) -> iam.Target:
    key = access.get_key_model(session, key_id)
    return access.get_endpoint_model(session, key.endpoint_id).project_id


def build_runtime(settings: Settings, db: Database,
                  credential_usage: iam.CredentialUsage | None = None,
                  streams: access.NodeStreams | None = None) -> access.AccessRuntime:
    cfg = settings.access
    return access.AccessRuntime(
        db, streams or access.DirectStreams(), access.AccessConfig(
            connect_timeout=cfg.upstream_connect_timeout_seconds,
            response_timeout=cfg.upstream_timeout_seconds,
            apps_host_suffix=cfg.apps_host_suffix, apps_path_sandbox=cfg.apps_path_sandbox),
        secret_key=settings.secret_key.get_secret_value(), credential_usage=credential_usage)


def meter_flusher(settings: Settings, db: Database, runtime: access.AccessRuntime
                  ) -> Controller:
    """Bills the endpoint requests this process served (runs in every API process)."""
    return Controller(name="access-endpoint-meter",
                      interval_seconds=settings.access.meter_flush_seconds,
                      run_once=lambda: runtime.meter.flush(db))


def prepare(settings: Settings, db: Database) -> None:
    with db.transaction() as session:
        billing.declare_meter(session, access.METER)
        if settings.seed_default_prices:
            seed_endpoint_prices(session)


def seed_endpoint_prices(session: Session) -> billing.PriceList | None:
    """A new default price list version that adds ``endpoint_requests`` to the one in
    effect, when that one does not price it (a price list version is never edited)."""
    now = datetime.now(UTC)
    book = billing.PriceBook(session)
    try:
        book.resolve("", access.METER.name, "2xx", now)
        return None
    except Exception:
        pass
    current = [p for p in billing.list_price_lists(session) if p.effective_from <= now]
    if not current:
        return None  # no default list to extend: whoever seeds one prices it
    latest = max(current, key=lambda p: (p.effective_from, p.version))
    prices = [p for p in latest.prices if p.meter != access.METER.name] + [
        billing.PriceIn(meter=access.METER.name, dimension_value=cls, unit_price=price,
                        per_quantity=1) for cls, price in access.DEFAULT_PRICES]
    return billing.create_price_list(session, actor=SEED_ACTOR, spec=billing.PriceListCreate(
        org_id=None, currency=latest.currency, effective_from=now,
        discount_bp=latest.discount_bp, prices=prices))


register_resources()
