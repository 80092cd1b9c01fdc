"""Money that billing admins move by hand: top-ups, adjustments, credit limits.

Each is idempotent (the caller's key becomes the transfer's key) and audited in the same
transaction.
"""

from __future__ import annotations

from sqlalchemy.orm import Session

from aicloud.platform import audit
from aicloud.platform.billing.ledger import (
    TransferSpec,
    account_model_to_account,
    get_transfer,
    lock_accounts,
    namespaced_key,
    org_wallet,
    platform_account,
    post_transfers,
    transfer_model_to_transfer,
)
from aicloud.platform.billing.money import MAX_AMOUNT, check_amount, check_currency
from aicloud.platform.billing.schemas import Account, Transfer
from aicloud.shared.errors import ValidationFailed


def top_up(session: Session, *, actor: audit.Actor, org_id: str, amount: int, currency: str,
           idempotency_key: str, reference: str | None = None) -> Transfer:
    """Credit an organization's wallet with funds received (debit platform funding)."""
    check_amount(amount)
    check_currency(currency)
    key = namespaced_key("topup:", idempotency_key)
    wallet = org_wallet(session, org_id, currency)
    funding = platform_account(session, "funding", currency)
    [posted] = post_transfers(session, [TransferSpec(
        debit_account_id=funding.id, credit_account_id=wallet.id, amount=amount,
        currency=currency, idempotency_key=key, reason="top_up",
        cause_type="top_up", cause_id=reference, metadata={"reference": reference})])
    if not posted.replayed:
        audit.record(session, actor=actor, action="billing.top_up", target_type="account",
                     target_id=wallet.id, scope_path=f"/{org_id}",
                     details={"transfer_id": posted.id, "amount": amount,
                              "currency": currency, "reference": reference})
    return transfer_model_to_transfer(get_transfer(session, posted.id))


def adjust(session: Session, *, actor: audit.Actor, org_id: str, amount: int, currency: str,
           idempotency_key: str, note: str) -> Transfer:
    """A goodwill credit (amount > 0) or a manual charge (amount < 0) on an org wallet."""
    if isinstance(amount, bool) or not isinstance(amount, int) or amount == 0:
        raise ValidationFailed("adjustment amount must be a non-zero integer of micro-units",
                               field="amount")
    check_amount(abs(amount))
    check_currency(currency)
    if not note.strip():
        raise ValidationFailed("an adjustment needs a note saying why", field="reason")
    key = namespaced_key("adjust:", idempotency_key)
    wallet = org_wallet(session, org_id, currency)
    expense = platform_account(session, "adjustments", currency)
    debit, credit = (expense.id, wallet.id) if amount > 0 else (wallet.id, expense.id)
    [posted] = post_transfers(session, [TransferSpec(
        debit_account_id=debit, credit_account_id=credit, amount=abs(amount),
        currency=currency, idempotency_key=key, reason="adjustment",
        cause_type="adjustment", metadata={"note": note})])
    if not posted.replayed:
        audit.record(session, actor=actor, action="billing.adjustment", target_type="account",
                     target_id=wallet.id, scope_path=f"/{org_id}",
                     details={"transfer_id": posted.id, "amount": amount,
                              "currency": currency, "note": note})
    return transfer_model_to_transfer(get_transfer(session, posted.id))


def set_credit_limit(session: Session, *, actor: audit.Actor, org_id: str, currency: str,
                     credit_limit: int) -> Account:
    """How far below zero an org wallet may go (holds and manual charges stop there)."""
    if isinstance(credit_limit, bool) or not isinstance(credit_limit, int) or not (
            0 <= credit_limit <= MAX_AMOUNT):
        raise ValidationFailed(f"credit limit must be an integer 0..{MAX_AMOUNT}",
                               field="credit_limit")
    wallet = lock_accounts(session, [org_wallet(session, org_id, currency).id])
    acct = next(iter(wallet.values()))
    old = acct.credit_limit
    acct.credit_limit = credit_limit
    session.flush()
    if old != credit_limit:
        audit.record(session, actor=actor, action="billing.credit_limit.set",
                     target_type="account", target_id=acct.id, scope_path=f"/{org_id}",
                     changes=audit.diff({"credit_limit": old}, {"credit_limit": credit_limit}))
    return account_model_to_account(acct)
