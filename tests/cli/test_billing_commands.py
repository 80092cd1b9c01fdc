"""``aicloud ledger check`` and ``aicloud billing ...`` as real processes on a real database."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
import sqlalchemy as sa

from aicloud.platform import billing
from aicloud.shared.db import Database
from tests.cli.test_operator_commands import run
from tests.platform.billing.factories import ADMIN, ORG_A, ensure_tenants, setup_catalog, usage


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    e = {k: v for k, v in os.environ.items() if not k.startswith("AICLOUD_")}
    e["AICLOUD_DATABASE_URL"] = f"sqlite:///{tmp_path / 'cli.db'}"
    e["COLUMNS"] = "200"
    return e


def test_ledger_check_is_clean_then_names_each_discrepancy(env: dict[str, str], tmp_path: Path,
                                                          _sqlite_template: Path) -> None:
    shutil.copy(_sqlite_template, tmp_path / "cli.db")  # migrated, as `db upgrade` leaves it
    meters = run(["billing", "register-meters", "-o", "json"], env)
    assert meters.returncode == 0, meters.stderr
    assert "gpu_seconds" in {m["name"] for m in json.loads(meters.stdout)}
    db = Database(env["AICLOUD_DATABASE_URL"])
    setup_catalog(db)
    ensure_tenants(db)
    with db.transaction() as s:
        billing.top_up(s, actor=ADMIN, org_id=ORG_A, amount=5_000_000, currency="USD",
                       idempotency_key="k1")
        billing.ingest_usage(s, [usage("u1", quantity=120)], actor=ADMIN, rate=False)
    rated = run(["billing", "rate-once", "-o", "json"], env)
    assert json.loads(rated.stdout) == {"rated": 1}, rated.stderr

    ok = run(["ledger", "check"], env)
    assert ok.returncode == 0 and "ledger ok: 2 transfer(s)" in ok.stdout, ok.stdout
    with db.engine.begin() as c:
        c.execute(sa.text("UPDATE billing_accounts SET debits_posted = debits_posted + 1 "
                          "WHERE purpose = 'wallet'"))
    db.dispose()
    bad = run(["ledger", "check", "-o", "json"], env)
    assert bad.returncode == 1
    data = json.loads(bad.stdout)
    assert not data["ok"]
    assert {d["code"] for d in data["discrepancies"]} >= {"balance-cache-mismatch"}
    table = run(["ledger", "check"], env)
    assert table.returncode == 1 and "balance-cache-mismatch" in table.stdout
