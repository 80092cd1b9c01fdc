"""Signed checkpoints: on demand, on a schedule (the controller), and their keys."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest
import sqlalchemy as sa

from aicloud.platform import audit, billing
from aicloud.platform.audit.signing import signature_is_valid
from aicloud.runtime import AppContext
from aicloud.shared.clock import FakeClock
from aicloud.shared.config import ConfigError, load_settings
from aicloud.shared.db import Database
from tests.platform.audit.helpers import (
    EVENTS,
    HEAD,
    KEY,
    anchored_context,
    attacker,
    checkpoint,
    published,
    rehash,
    row,
    seed,
    verify,
    verify_against,
)
from tests.platform.billing.factories import ORG_A, ensure_scopes


def test_a_checkpoint_signs_the_head_and_count(db: Database) -> None:
    seed(db, 4, per_txn=2)
    cp = checkpoint(db)
    result = verify(db)
    assert (cp.seq, cp.event_count, cp.head_hash) == (4, 4, result.head_hash)
    assert cp.key_id == KEY.key_id
    # Anyone with the public key can check it, from the documented message.
    assert signature_is_valid(KEY.public_key, cp.signature, cp.message())
    assert not signature_is_valid(KEY.public_key, cp.signature, cp.message() + b"x")


def test_nothing_to_sign_on_an_empty_chain(db: Database) -> None:
    with db.transaction() as s:
        assert audit.create_checkpoint(s, KEY) is None


def test_scheduled_checkpoint_only_when_the_head_moved(ctx: AppContext) -> None:
    ctx.clock = FakeClock()
    controller = next(c for c in ctx.controllers() if c.name == "audit-checkpoint")
    assert controller.interval_seconds == ctx.settings.audit_checkpoint_interval_seconds == 300
    assert controller.run_once() is None  # empty chain
    seed(ctx.db, 3)
    first = controller.run_once()
    assert first is not None and first.seq == 3
    assert first.signed_at == ctx.clock.now()
    assert controller.run_once() is None  # head unchanged
    seed(ctx.db, 1)
    second = controller.run_once()
    assert second is not None and second.seq == 4
    result = audit.verify_chain(ctx.db, audit.trusted_public_keys(ctx.settings))
    assert result.ok and result.checkpoints_checked == 2


def test_development_key_is_derived_from_the_secret_key() -> None:
    a = audit.signing_key(load_settings("dev", secret_key="a" * 40))
    again = audit.signing_key(load_settings("dev", secret_key="a" * 40))
    other = audit.signing_key(load_settings("dev", secret_key="b" * 40))
    assert a.derived and a.key_id == again.key_id != other.key_id


def test_a_configured_key_is_used_and_strict_profiles_need_one() -> None:
    raw = base64.b64encode(bytes(range(32))).decode()
    key = audit.signing_key(load_settings("dev", audit_signing_key=raw))
    assert not key.derived and key.key_id == KEY.key_id
    with pytest.raises(ConfigError, match="audit_signing_key"):
        audit.signing_key(load_settings("prod"))


def test_earlier_public_keys_are_trusted() -> None:
    old = audit.SigningKey.from_b64(audit.generate_key_b64())
    settings = load_settings("dev", audit_trusted_public_keys=[old.public_key_b64])
    trusted = audit.trusted_public_keys(settings)
    assert old.key_id in trusted
    assert audit.signing_key(settings).key_id in trusted


def test_the_controller_signs_when_the_ledger_moves_and_publishes(db: Database,
                                                                   tmp_path: Path) -> None:
    """The scheduled checkpoint covers the ledger digest too: a transfer posted without an
    audit event (rating does that) still gets a new checkpoint, and each one is published."""
    ctx = anchored_context(db, tmp_path / "anchors")
    ctx.clock = FakeClock()
    controller = next(c for c in ctx.controllers() if c.name == "audit-checkpoint")
    seed(db, 2)
    first = controller.run_once()
    assert first is not None and first.contributions == {"ledger": {
        "transfers": 0, "last_seq": 0, "digest": "0" * 64, "last_id": ""}}
    assert controller.run_once() is None
    with db.transaction() as s:
        ensure_scopes(s, f"/{ORG_A}")  # wallets belong to an organization that exists
        funding = billing.platform_account(s, "funding", "USD")
        wallet = billing.org_wallet(s, ORG_A, "USD")
        billing.post_transfers(s, [billing.TransferSpec(
            debit_account_id=funding.id, credit_account_id=wallet.id, amount=5,
            currency="USD", idempotency_key="quiet", reason="top_up")])
    second = controller.run_once()
    assert second is not None and second.seq == first.seq  # the audit head did not move
    assert second.contributions is not None
    assert second.contributions["ledger"]["transfers"] == 1
    assert [c.id for c in published(tmp_path / "anchors").checkpoints] == [first.id, second.id]
    assert verify_against(db, tmp_path / "anchors").ok


@pytest.mark.parametrize("tamper", ["head_hash", "head_behind"])
def test_the_key_never_signs_a_head_row_that_is_not_the_chains_end(db: Database,
                                                                   tamper: str) -> None:
    seed(db, 5)
    with attacker(db) as conn:
        if tamper == "head_hash":
            conn.execute(sa.update(HEAD).values(hash="e" * 64))
        else:
            conn.execute(sa.update(HEAD).values(seq=3, hash=row(conn, 3)["hash"]))
    with db.transaction() as s, pytest.raises(audit.AuditChainBroken, match="refusing to sign"):
        audit.create_checkpoint(s, KEY)


def test_the_key_never_signs_a_chain_rewritten_below_its_last_checkpoint(db: Database) -> None:
    seed(db, 5)
    first = checkpoint(db)
    with attacker(db) as conn:  # event 5 edited, its hash and the head recomputed
        fields = row(conn, 5)
        fields["outcome"] = "denied"
        new_hash = rehash(fields)
        conn.execute(sa.update(EVENTS).where(EVENTS.c.seq == 5).values(outcome="denied",
                                                                         hash=new_hash))
        conn.execute(sa.update(HEAD).values(hash=new_hash))
    seed(db, 1)
    with db.transaction() as s, pytest.raises(audit.AuditChainBroken, match=first.id):
        audit.create_checkpoint(s, KEY)
