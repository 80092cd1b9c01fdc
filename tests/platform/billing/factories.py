"""Builders for billing tests: meters, a default price list, funded wallets, usage."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy.orm import Session

from aicloud.platform import billing
from aicloud.platform.audit import Actor
from aicloud.platform.iam.models import DepartmentModel, OrganizationModel, ProjectModel
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


# The tenants billing tests charge. Billing checks every scope path against IAM, so they
# exist there (ensure_tenants; the billing tests' conftest adds them) with fixed, well-formed
# ids that the tests can spell: org A's ids end in A (its projects A, B, C), the other
# organizations' in 1 + a letter, and their one department and project share their suffix.
ORG_A = "org_0000000000000000000000000A"
DEP_A = "dep_0000000000000000000000000A"
PRJ_A, PRJ_B, PRJ_C = (f"prj_{'0' * 25}{x}" for x in "ABC")
ORG_A_PATHS = tuple(f"/{ORG_A}/{DEP_A}/{p}" for p in (PRJ_A, PRJ_B, PRJ_C))
OTHER_ORGS = ORG_B, ORG_H, ORG_K, ORG_RICH, ORG_OTHER, ORG_HOLDS = tuple(
    f"org_{'0' * 24}1{x}" for x in "BHKRTS")


def tenant_path(org: str) -> str:
    """The project path usage of ``org`` goes to by default."""
    if org == ORG_A:
        return ORG_A_PATHS[0]
    suffix = org.split("_", 1)[1]
    return f"/{org}/dep_{suffix}/prj_{suffix}"


def ensure_scopes(session: Session, *paths: str) -> None:
    """Organizations, departments and projects with exactly these ids (the IAM service
    makes its own ids; billing tests name theirs)."""
    now = T0
    for path in paths:
        org, *rest = path.strip("/").split("/")
        if session.get(OrganizationModel, org) is None:
            session.add(OrganizationModel(id=org, name=org, created_at=now, updated_at=now))
            session.flush()
        dep = rest[0] if len(rest) == 2 else None
        if dep and session.get(DepartmentModel, dep) is None:
            session.add(DepartmentModel(id=dep, org_id=org, name=dep, created_at=now,
                                        updated_at=now))
            session.flush()
        if rest and session.get(ProjectModel, rest[-1]) is None:
            session.add(ProjectModel(id=rest[-1], org_id=org, department_id=dep,
                                     name=rest[-1], created_at=now, updated_at=now))
            session.flush()


def ensure_tenants(db: Database) -> None:
    with db.transaction() as s:
        ensure_scopes(s, *ORG_A_PATHS, *map(tenant_path, OTHER_ORGS))


def usage(key: str, *, resource: str = "inst_1", org: str = ORG_A, dep: str | None = None,
          project: str | None = None, meter: str = "gpu_seconds", dim: str = "A100",
          quantity: int = 60, start: datetime = T0 + timedelta(hours=1),
          seconds: int | None = None, principal: str | None = "user_1") -> billing.UsageIn:
    _, default_dep, default_project = tenant_path(org).split("/")[1:]
    dep, project = dep or default_dep, project or default_project
    return billing.UsageIn(
        resource_id=resource, project_id=project, scope_path=f"/{org}/{dep}/{project}",
        principal_id=principal, meter=meter,
        dimension_value={"gpu_seconds": dim, "endpoint_requests": "2xx"}.get(meter, ""),
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
