"""billing_0003 keys the transfers already posted, so their accounts' histories keep them."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
import sqlalchemy as sa

from aicloud.platform import billing
from aicloud.platform.audit import Actor
from aicloud.shared.db import Database, migrate
from tests.platform.billing.factories import (
    ORG_A,
    ORG_K,
)


@pytest.fixture(params=["sqlite", "postgresql"])
def empty_db(request: pytest.FixtureRequest, tmp_path: Path) -> Database:
    if request.param == "sqlite":
        return Database(f"sqlite:///{tmp_path / 'keys.db'}")
    return Database(request.getfixturevalue("fresh_pg_url"))


def test_upgrade_keys_existing_transfers(empty_db: Database) -> None:
    migrate.upgrade(empty_db, "billing_0002")
    now = datetime(2026, 11, 1, tzinfo=UTC).replace(tzinfo=None)
    with empty_db.engine.begin() as c:
        for acct, type_, owner, purpose, debits, credits in (
                ("acct_fund", "asset", "platform", "funding", 700, 0),
                ("acct_wallet", "liability", ORG_A, "wallet", 200, 700),
                ("acct_rev", "revenue", "platform", "revenue", 0, 200)):
            c.execute(sa.text(
                "INSERT INTO billing_accounts (id, type, currency, owner_type, owner_id, "
                "scope_path, purpose, enforce_floor, credit_limit, strict_non_negative, "
                "debits_posted, credits_posted, created_at) VALUES (:id, :type, 'USD', "
                "'organization', :owner, '/', :purpose, false, 0, false, :d, :c, :now)"),
                {"id": acct, "type": type_, "owner": owner, "purpose": purpose, "d": debits,
                 "c": credits, "now": now})
        for xfer, debit, credit, amount in (("xfer_1", "acct_fund", "acct_wallet", 700),
                                            ("xfer_2", "acct_wallet", "acct_rev", 200)):
            c.execute(sa.text(
                "INSERT INTO billing_transfers (id, debit_account_id, credit_account_id, "
                "amount, currency, idempotency_key, reason, metadata_json, posted_at) VALUES "
                "(:id, :d, :c, :amount, 'USD', :id, 'transfer', '{}', :now)"),
                {"id": xfer, "d": debit, "c": credit, "amount": amount, "now": now})

    migrate.upgrade(empty_db)

    with empty_db.transaction() as s:
        assert billing.check_ledger(s).ok
        assert [t.id for t in billing.list_transfers(s, "acct_wallet")] == ["xfer_1", "xfer_2"]
        assert [t.id for t in billing.list_transfers(s, "acct_rev")] == ["xfer_2"]
    with empty_db.engine.begin() as c, pytest.raises(sa.exc.DatabaseError):
        c.execute(sa.text("UPDATE billing_transfers SET amount = 1"))  # still append-only
    empty_db.dispose()


def test_check_names_a_transfer_with_a_wrong_account_key(db: Database) -> None:
    with db.transaction() as s:
        billing.top_up(s, actor=Actor.system("test"), org_id=ORG_K, amount=5, currency="USD",
                       idempotency_key="k-1")
        wallet = billing.org_wallet(s, ORG_K, "USD").id
    with db.engine.begin() as c:
        # Posted behind the ledger's back with a stale key: invisible to the account's
        # history, so the check must say so.
        funding = c.execute(sa.text("SELECT debit_account_id FROM billing_transfers")).scalar()
        c.execute(sa.text(
            "INSERT INTO billing_transfers (id, debit_account_id, credit_account_id, amount, "
            "currency, idempotency_key, reason, metadata_json, posted_at, debit_key, credit_key)"
            " VALUES ('xfer_x', :f, :w, 1, 'USD', 'x', 'transfer', '{}', :now, :fk, 42)"),
            {"f": funding, "w": wallet, "now": datetime(2026, 11, 1),
             "fk": billing.account_key(funding)})
    with db.transaction() as s:
        codes = [d.code for d in billing.check_ledger(s).discrepancies]
    assert "account-key-mismatch" in codes
