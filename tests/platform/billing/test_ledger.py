from __future__ import annotations

import pytest
import sqlalchemy as sa

from aicloud.platform import billing
from aicloud.shared.db import Database
from aicloud.shared.errors import Conflict, NotFound, ValidationFailed
from tests.platform.billing.factories import (
    ADMIN,
    ORG_A,
    assert_ledger_clean,
)


def _counts(db: Database) -> tuple[int, int]:
    with db.engine.connect() as c:
        return (c.scalar(sa.text("SELECT count(*) FROM billing_transfers")),
                c.scalar(sa.text("SELECT count(*) FROM audit_events")))


def _funded(db: Database, org: str = ORG_A, amount: int = 10_000_000) -> str:
    with db.transaction() as s:
        billing.top_up(s, actor=ADMIN, org_id=org, amount=amount, currency="USD",
                       idempotency_key=f"t-{org}", reference="wire-1")
        return billing.org_wallet(s, org, "USD").id


def test_top_up_posts_one_balanced_transfer_and_is_idempotent(db: Database) -> None:
    wallet = _funded(db)
    with db.transaction() as s:
        again = billing.top_up(s, actor=ADMIN, org_id=ORG_A, amount=10_000_000,
                               currency="USD", idempotency_key=f"t-{ORG_A}", reference="wire-1")
        assert again.reason == "top_up"
        assert billing.balance(s, wallet).posted == 10_000_000
        funding = billing.platform_account(s, "funding", "USD")
        assert billing.balance(s, funding.id).posted == 10_000_000  # asset: debit-normal
    assert _counts(db) == (1, 1)  # one transfer, one audit event
    with db.transaction() as s, pytest.raises(Conflict):
        billing.top_up(s, actor=ADMIN, org_id=ORG_A, amount=5, currency="USD",
                       idempotency_key=f"t-{ORG_A}")
    assert_ledger_clean(db)


def test_client_keys_leave_room_for_their_namespace(db: Database) -> None:
    """A top-up or adjustment key is stored as topup:<key> / adjust:<key>; a key that would
    overflow the key column is refused up front, naming the limit."""
    longest = "k" * billing.MAX_CLIENT_KEY_LENGTH
    with db.transaction() as s:
        billing.top_up(s, actor=ADMIN, org_id=ORG_A, amount=5, currency="USD",
                       idempotency_key=longest)
    for post in (
        lambda s: billing.top_up(s, actor=ADMIN, org_id=ORG_A, amount=5, currency="USD",
                                 idempotency_key=longest + "k"),
        lambda s: billing.adjust(s, actor=ADMIN, org_id=ORG_A, amount=5, currency="USD",
                                 idempotency_key="k" * 255, note="goodwill"),
    ):
        with db.transaction() as s, pytest.raises(ValidationFailed, match="longer than 200"):
            post(s)
    assert _counts(db) == (1, 1)


def test_a_batch_posts_all_or_nothing(db: Database) -> None:
    wallet = _funded(db)
    with db.transaction() as s:
        revenue = billing.platform_account(s, "revenue", "USD").id
    good = billing.TransferSpec(wallet, revenue, 100, "USD", "b-1", "transfer")
    bad = billing.TransferSpec(wallet, revenue, 100, "EUR", "b-2", "transfer")
    with db.transaction() as s, pytest.raises(ValidationFailed, match="currency mismatch"):
        billing.post_transfers(s, [good, bad])
    assert _counts(db)[0] == 1
    with db.transaction() as s:
        posted = billing.post_transfers(s, [good, billing.TransferSpec(
            wallet, revenue, 50, "USD", "b-3", "transfer")])
        assert [p.replayed for p in posted] == [False, False]
        assert billing.balance(s, wallet).posted == 10_000_000 - 150
    assert_ledger_clean(db)


@pytest.mark.parametrize(("amount", "currency", "message"), [
    (0, "USD", "must be positive"),
    (-5, "USD", "must be positive"),
    (1.5, "USD", "integer"),
    (10**30, "USD", "exceeds the maximum"),
    (100, "XXX", "unknown currency"),
    (100, "EUR", "currency mismatch"),
])
def test_bad_transfers_are_refused_and_write_nothing(db: Database, amount: object,
                                                     currency: str, message: str) -> None:
    wallet = _funded(db)
    with db.transaction() as s:
        revenue = billing.platform_account(s, "revenue", "USD").id
    before = _counts(db)
    with db.transaction() as s, pytest.raises(ValidationFailed, match=message) as exc:
        billing.post_transfers(s, [billing.TransferSpec(
            wallet, revenue, amount, currency, "bad-1", "transfer")])  # type: ignore[arg-type]
    assert exc.value.status == 422
    assert _counts(db) == before


def test_database_refuses_update_and_delete_of_transfers(db: Database) -> None:
    _funded(db)
    for statement in ("UPDATE billing_transfers SET amount = 1",
                      "DELETE FROM billing_transfers"):
        with pytest.raises(sa.exc.DBAPIError, match="append-only"), db.engine.begin() as c:
            c.execute(sa.text(statement))
    with db.engine.connect() as c:
        assert c.scalar(sa.text("SELECT sum(amount) FROM billing_transfers")) == 10_000_000


def test_reversal_names_the_original_and_happens_once(db: Database) -> None:
    wallet = _funded(db)
    with db.transaction() as s:
        [original] = billing.list_transfers(s, wallet)
        rev = billing.reverse_transfer(s, actor=ADMIN, transfer_id=original.id,
                                       note="wrong org")
        assert rev.reverses_transfer_id == original.id
        assert billing.balance(s, wallet).posted == 0
    with db.transaction() as s, pytest.raises(Conflict, match="already reversed"):
        billing.reverse_transfer(s, actor=ADMIN, transfer_id=original.id, note="again",
                                 idempotency_key="other")
    with db.transaction() as s, pytest.raises(NotFound):
        billing.reverse_transfer(s, actor=ADMIN, transfer_id="xfer_nope", note="x")
    assert_ledger_clean(db)


def test_credit_limit_sets_the_floor_for_manual_charges(db: Database) -> None:
    wallet = _funded(db, amount=1_000)
    with db.transaction() as s, pytest.raises(Conflict, match="insufficient funds"):
        billing.adjust(s, actor=ADMIN, org_id=ORG_A, amount=-1_500, currency="USD",
                       idempotency_key="a1", note="manual charge")
    with db.transaction() as s:
        acct = billing.set_credit_limit(s, actor=ADMIN, org_id=ORG_A, currency="USD",
                                        credit_limit=500)
        assert acct.credit_limit == 500
        billing.adjust(s, actor=ADMIN, org_id=ORG_A, amount=-1_500, currency="USD",
                       idempotency_key="a1", note="manual charge")
        assert billing.balance(s, wallet).available == -500
        billing.adjust(s, actor=ADMIN, org_id=ORG_A, amount=200, currency="USD",
                       idempotency_key="a2", note="goodwill")
    with db.transaction() as s, pytest.raises(ValidationFailed):
        billing.adjust(s, actor=ADMIN, org_id=ORG_A, amount=0, currency="USD",
                       idempotency_key="a3", note="zero")
    assert_ledger_clean(db)


def test_check_names_each_discrepancy(db: Database) -> None:
    wallet = _funded(db)
    with db.engine.begin() as c:  # tamper with the cache behind the service's back
        c.execute(sa.text("UPDATE billing_accounts SET credits_posted = credits_posted + 7 "
                          "WHERE id = :id"), {"id": wallet})
    with db.transaction() as s:
        result = billing.check_ledger(s)
    assert not result.ok
    codes = {d.code for d in result.discrepancies}
    assert codes == {"balance-cache-mismatch", "unbalanced-currency", "unbalanced-total"}
    assert any(wallet in d.message for d in result.discrepancies)
