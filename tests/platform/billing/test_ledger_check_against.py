"""`ledger check --against`: the transfers must still hash to every digest signed into a
published checkpoint. Each tamper here keeps the balance caches consistent, so the plain
check says ok; the published digests do not. SQLite and PostgreSQL.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
import sqlalchemy as sa

from aicloud.platform import audit, billing
from aicloud.runtime import AppContext
from aicloud.shared.db import Database
from tests.platform.audit.helpers import APPEND_ONLY, anchored_context, attacker, published
from tests.platform.billing.factories import ADMIN, ORG_A, ORG_B

TRANSFERS = "billing_transfers"
ALL = (*APPEND_ONLY, TRANSFERS)


@pytest.fixture
def sink_dir(tmp_path: Path) -> Path:
    return tmp_path / "anchors"


@pytest.fixture
def actx(db: Database, sink_dir: Path) -> AppContext:
    return anchored_context(db, sink_dir)


def _top_up(db: Database, org: str, amount: int, key: str,
            currency: str = "USD") -> billing.Transfer:
    with db.transaction() as s:
        return billing.top_up(s, actor=ADMIN, org_id=org, amount=amount, currency=currency,
                              idempotency_key=key)


def _ledger(actx: AppContext) -> dict[str, str]:
    """Five top-ups across two wallets, published in two checkpoints; the wallets' ids."""
    _top_up(actx.db, ORG_A, 1_000, "a1")
    _top_up(actx.db, ORG_B, 2_000, "b1")
    assert actx.audit_checkpoint() is not None
    _top_up(actx.db, ORG_A, 3_000, "a2")
    _top_up(actx.db, ORG_B, 4_000, "b2")
    _top_up(actx.db, ORG_A, 5_000, "a3")
    cp = actx.audit_checkpoint()
    assert cp is not None and cp.contributions is not None
    assert cp.contributions["ledger"]["transfers"] == 5
    with actx.db.transaction() as s:
        return {org: billing.org_wallet(s, org, "USD").id for org in (ORG_A, ORG_B)}


def _check(db: Database, sink_dir: Path | None = None) -> billing.LedgerCheck:
    with db.transaction() as s:
        return billing.check_ledger(
            s, published=published(sink_dir) if sink_dir is not None else None)


def _caught(db: Database, sink_dir: Path, code: str) -> billing.Discrepancy:
    plain = _check(db)
    assert plain.ok, [d.message for d in plain.discrepancies]  # invisible without the sink
    result = _check(db, sink_dir)
    assert not result.ok
    assert [d.code for d in result.discrepancies] == [code], result.discrepancies
    return result.discrepancies[0]


def _transfer(conn: sa.Connection, key: str) -> sa.Row:
    return conn.execute(sa.text(f"SELECT * FROM {TRANSFERS} WHERE idempotency_key = :k"),
                        {"k": f"topup:{key}"}).one()


def test_a_clean_ledger_matches_every_published_digest(actx: AppContext,
                                                       sink_dir: Path) -> None:
    _ledger(actx)
    _top_up(actx.db, ORG_A, 7, "after")  # after the last publication: not covered yet
    result = _check(actx.db, sink_dir)
    assert result.ok, result.discrepancies
    assert (result.published_checked, result.transfers) == (2, 6)


def test_the_published_digest_is_incremental_and_equals_a_full_recompute(
        actx: AppContext) -> None:
    _ledger(actx)
    with actx.db.transaction() as s:
        full = billing.advance_ledger_digest(s, None)
        first = billing.ledger_digests_at(s, [2])[2].to_dict()
        carried = billing.advance_ledger_digest(s, first)
    assert carried == full and full["transfers"] == 5


def test_an_amount_edited_with_the_caches_fixed(actx: AppContext, sink_dir: Path) -> None:
    wallets = _ledger(actx)
    with attacker(actx.db, ALL) as conn:
        t = _transfer(conn, "a2")
        conn.execute(sa.text(f"UPDATE {TRANSFERS} SET amount = 30 WHERE seq = :s"),
                     {"s": t.seq})
        for account, column in ((t.debit_account_id, "debits_posted"),
                                (t.credit_account_id, "credits_posted")):
            conn.execute(sa.text(f"UPDATE billing_accounts SET {column} = {column} - 2970 "
                                 "WHERE id = :id"), {"id": account})
    d = _caught(actx.db, sink_dir, "ledger-digest-mismatch")
    assert "after seq" in d.message and "edited" in d.message and wallets[ORG_A]


def test_a_forged_transfer_with_the_caches_fixed(actx: AppContext, sink_dir: Path) -> None:
    wallets = _ledger(actx)
    with attacker(actx.db, ALL) as conn:
        model = _transfer(conn, "a1")._mapping
        forged = {**model, "seq": 0, "id": "trf_forged", "amount": 10_000,
                  "idempotency_key": "topup:forged"}
        # Below every published point (seq 0): history, not a new posting.
        conn.execute(sa.text(f"INSERT INTO {TRANSFERS} ({', '.join(forged)}) VALUES "
                             f"({', '.join(':' + k for k in forged)})"), forged)
        conn.execute(sa.text("UPDATE billing_accounts SET credits_posted = credits_posted + "
                             "10000 WHERE id = :id"), {"id": wallets[ORG_A]})
        conn.execute(sa.text("UPDATE billing_accounts SET debits_posted = debits_posted + "
                             "10000 WHERE id = :id"), {"id": model["debit_account_id"]})
    d = _caught(actx.db, sink_dir, "ledger-digest-mismatch")
    assert "forged" in d.message and "from the first transfer" in d.message


def test_a_transfer_moved_to_another_wallet(actx: AppContext, sink_dir: Path) -> None:
    wallets = _ledger(actx)
    with attacker(actx.db, ALL) as conn:
        t = _transfer(conn, "a3")
        conn.execute(sa.text(f"UPDATE {TRANSFERS} SET credit_account_id = :b, credit_key = :k "
                             "WHERE seq = :s"),
                     {"b": wallets[ORG_B], "k": billing.account_key(wallets[ORG_B]),
                      "s": t.seq})
        for org, delta in ((ORG_A, -t.amount), (ORG_B, t.amount)):
            conn.execute(sa.text("UPDATE billing_accounts SET credits_posted = credits_posted "
                                 "+ :d WHERE id = :id"), {"d": delta, "id": wallets[org]})
    d = _caught(actx.db, sink_dir, "ledger-digest-mismatch")
    assert f"up to seq {t.seq}" in d.message


def test_transfers_deleted_and_everything_truncated(actx: AppContext, sink_dir: Path) -> None:
    _ledger(actx)
    tables = ["billing_transfers", "billing_accounts", "audit_events", "audit_checkpoints",
              "audit_chain_head"]
    with attacker(actx.db, ALL) as conn:
        if actx.db.dialect == "postgresql":
            conn.execute(sa.text(f"TRUNCATE {', '.join(tables)}"))
        else:
            for t in tables:
                conn.execute(sa.text(f"DELETE FROM {t}"))
    d = _caught(actx.db, sink_dir, "ledger-rolled-back")
    assert "the database has 0" in d.message and "deleted" in d.message


def test_a_transfer_after_the_last_publication_remains_undetectable(
        actx: AppContext, sink_dir: Path) -> None:
    """The documented limit: nothing published covers it yet."""
    _ledger(actx)
    last = _top_up(actx.db, ORG_A, 9, "late")
    with attacker(actx.db, ALL) as conn:
        conn.execute(sa.text(f"UPDATE {TRANSFERS} SET amount = 8 WHERE id = :id"),
                     {"id": last.id})
        conn.execute(sa.text("UPDATE billing_accounts SET credits_posted = credits_posted - 1 "
                             "WHERE id = :id"), {"id": last.credit_account_id})
        conn.execute(sa.text("UPDATE billing_accounts SET debits_posted = debits_posted - 1 "
                             "WHERE id = :id"), {"id": last.debit_account_id})
    assert _check(actx.db, sink_dir).ok


def test_a_transfer_in_flight_is_waited_for_not_skipped(actx: AppContext,
                                                        sink_dir: Path) -> None:
    """PostgreSQL hands out seqs before commit: a transfer given seq n that commits after a
    checkpoint read n+1 would land below a signed point and look forged. The checkpoint
    waits for transfers in flight (on SQLite the writers are serialized anyway)."""
    if actx.db.dialect != "postgresql":
        pytest.skip("SQLite serializes writers; nothing can be in flight")
    _top_up(actx.db, ORG_B, 1, "warm")
    slow = actx.db.session()
    slow.begin()
    billing.top_up(slow, actor=ADMIN, org_id=ORG_A, amount=5, currency="USD",
                   idempotency_key="slow")  # inserted (seq n), not committed
    # seq n + 1, committed first (in EUR: no account in common with the one in flight)
    _top_up(actx.db, ORG_B, 6, "fast", currency="EUR")
    done = threading.Event()

    def checkpoint() -> None:
        actx.audit_checkpoint()
        done.set()

    worker = threading.Thread(target=checkpoint)
    worker.start()
    time.sleep(0.5)
    assert not done.is_set(), "the checkpoint must wait for the transfer in flight"
    slow.commit()
    slow.close()
    worker.join(timeout=30)
    assert done.is_set()
    result = _check(actx.db, sink_dir)
    assert result.ok, result.discrepancies
    assert published(sink_dir).checkpoints[-1].contributions["ledger"]["transfers"] == 3  # type: ignore[index]


def test_the_signer_refuses_to_carry_the_digest_over_a_ledger_that_lost_its_end(
        actx: AppContext, sink_dir: Path) -> None:
    _ledger(actx)
    with attacker(actx.db, ALL) as conn:
        t = _transfer(conn, "a3")  # the last transfer the published digest covers
        conn.execute(sa.text(f"DELETE FROM {TRANSFERS} WHERE seq = :s"), {"s": t.seq})
        for side, account in (("debits_posted", t.debit_account_id),
                              ("credits_posted", t.credit_account_id)):
            conn.execute(sa.text(f"UPDATE billing_accounts SET {side} = {side} - :a "
                                 "WHERE id = :id"), {"a": t.amount, "id": account})
    _top_up(actx.db, ORG_B, 1, "later")
    before = sorted(p.name for p in sink_dir.iterdir())
    with pytest.raises(audit.AuditChainBroken, match=rf"transfer {t.seq} \({t.id}\) is gone"):
        actx.audit_checkpoint()
    assert sorted(p.name for p in sink_dir.iterdir()) == before
    assert _check(actx.db).ok
    # PostgreSQL: five transfers published, four left up to that seq. SQLite hands the
    # deleted seq to the next transfer: as many, but another one.
    assert [d.code for d in _check(actx.db, sink_dir).discrepancies] == [
        "ledger-rolled-back" if actx.db.dialect == "postgresql" else "ledger-digest-mismatch"]
