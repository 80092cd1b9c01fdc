"""Builders for billing tests: meters, a default price list, funded wallets, usage."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from aicloud.platform import billing
from aicloud.platform.audit import Actor
from aicloud.shared.db import Database

ADMIN = Actor(id="user_billing_admin")
T0 = datetime(2026, 1, 1, tzinfo=UTC)
# 3.60 USD per GPU-hour = 1000 micro-units per GPU-second for the A100; 7.20 for the H100.
GPU_HOUR_A100 = 3_600_000
GPU_HOUR_H100 = 7_200_000


def setup_catalog(db: Database, *, effective_from: datetime = T0) -> None:
    with db.transaction() as s:
        billing.register_default_meters(s)
        billing.create_price_list(s, actor=ADMIN, spec=billing.PriceListCreate(
            currency="USD", effective_from=effective_from, prices=[
                billing.PriceIn(meter="gpu_seconds", dimension_value="A100",
                                unit_price=GPU_HOUR_A100, per_quantity=3600),
                billing.PriceIn(meter="gpu_seconds", dimension_value="H100",
                                unit_price=GPU_HOUR_H100, per_quantity=3600),
                billing.PriceIn(meter="vcpu_seconds", unit_price=36_000, per_quantity=3600),
                billing.PriceIn(meter="memory_gib_seconds", unit_price=7, per_quantity=1),
                billing.PriceIn(meter="endpoint_requests", unit_price=1, per_quantity=3),
            ]))


def usage(key: str, *, resource: str = "inst_1", org: str = "org_a", dep: str = "dep_a",
          project: str = "prj_a", meter: str = "gpu_seconds", dim: str = "A100",
          quantity: int = 60, start: datetime = T0 + timedelta(hours=1),
          seconds: int | None = None, principal: str | None = "user_1") -> billing.UsageIn:
    return billing.UsageIn(
        resource_id=resource, project_id=project, scope_path=f"/{org}/{dep}/{project}",
        principal_id=principal, meter=meter, dimension_value=dim if meter == "gpu_seconds" else "",
        quantity=quantity, window_start=start,
        window_end=start + timedelta(seconds=seconds or quantity), idempotency_key=key,
        source="test")


def rate_all(db: Database, batch_size: int = 2000) -> int:
    total = 0
    while True:
        with db.transaction() as s:
            n = billing.rate_batch(s, batch_size=batch_size).rated
        total += n
        if n == 0:
            return total


def assert_ledger_clean(db: Database) -> None:
    with db.transaction() as s:
        result = billing.check_ledger(s)
    assert result.ok, [d.message for d in result.discrepancies]
