"""Billing tests charge tenants with fixed ids; billing checks scope paths against IAM, so
those tenants exist in every database a billing test gets."""

from __future__ import annotations

import pytest

from tests.platform.billing.factories import ensure_tenants


@pytest.fixture(autouse=True)
def _tenants(request: pytest.FixtureRequest) -> None:
    for name in ("db", "sqlite_db"):
        if name in request.fixturenames:
            ensure_tenants(request.getfixturevalue(name))
