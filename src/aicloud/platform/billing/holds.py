"""Two-phase holds: reserve funds now (pending), then post all or part, void, or let expire.

A hold reserves funds on an account without moving them: available = posted - open holds.
Creating a hold locks the account row (PostgreSQL), so concurrent holds against one wallet
are decided one at a time and can never reserve more than the wallet can fund.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from aicloud.platform import audit
from aicloud.platform.billing.ledger import (
    TransferSpec,
    held_amount,
    lock_accounts,
    normal_balance,
    post_transfers,
)
from aicloud.platform.billing.models import HoldModel
from aicloud.platform.billing.money import check_amount, check_currency
from aicloud.platform.billing.schemas import Hold
from aicloud.shared.clock import utcnow
from aicloud.shared.errors import Conflict, NotFound, ValidationFailed
from aicloud.shared.idempotency import validate_key
from aicloud.shared.ids import new_id

MAX_TTL = timedelta(days=31)


def hold_model_to_hold(m: HoldModel) -> Hold:
    return Hold(id=m.id, account_id=m.account_id, counter_account_id=m.counter_account_id,
                amount=m.amount, currency=m.currency, status=m.status,  # type: ignore[arg-type]
                posted_amount=m.posted_amount, reason=m.reason, expires_at=m.expires_at,
                created_at=m.created_at, closed_at=m.closed_at)


def create_hold(
    session: Session, *, actor: audit.Actor, account_id: str, counter_account_id: str,
    amount: int, currency: str, idempotency_key: str, ttl: timedelta = timedelta(hours=1),
    reason: str = "admission", cause_type: str | None = None, cause_id: str | None = None,
    now: datetime | None = None,
) -> Hold:
    check_amount(amount)
    check_currency(currency)
    validate_key(idempotency_key)
    if not timedelta(0) < ttl <= MAX_TTL:
        raise ValidationFailed("hold ttl must be between 1 second and 31 days", field="ttl")
    if account_id == counter_account_id:
        raise ValidationFailed("a hold needs two different accounts")
    now = now or utcnow()
    existing = session.scalar(select(HoldModel).where(
        HoldModel.idempotency_key == idempotency_key))
    if existing is not None:
        if (existing.account_id, existing.amount, existing.currency) != (
                account_id, amount, currency):
            raise Conflict(f"idempotency key {idempotency_key!r} was used for another hold")
        return hold_model_to_hold(existing)
    accounts = lock_accounts(session, [account_id, counter_account_id])
    acct = accounts[account_id]
    for a in accounts.values():
        if a.currency != currency:
            raise ValidationFailed(f"currency mismatch: hold in {currency}, account {a.id} "
                                   f"holds {a.currency}", field="currency")
    posted = normal_balance(acct.type, acct.debits_posted, acct.credits_posted)
    available = posted - held_amount(session, account_id, now)
    floor = -acct.credit_limit if acct.enforce_floor else None
    if floor is not None and available - amount < floor:
        raise Conflict(f"insufficient funds: available {available}, hold {amount}, "
                       f"floor {floor}", account_id=account_id, available=available)
    m = HoldModel(id=new_id("hold"), account_id=account_id,
                  counter_account_id=counter_account_id, amount=amount, currency=currency,
                  status="pending", posted_amount=0, idempotency_key=idempotency_key,
                  reason=reason, cause_type=cause_type, cause_id=cause_id,
                  expires_at=now + ttl, created_at=now)
    session.add(m)
    session.flush()
    audit.record(session, actor=actor, action="billing.hold.create", target_type="hold",
                 target_id=m.id, scope_path=acct.scope_path,
                 details={"account_id": account_id, "amount": amount, "currency": currency,
                          "expires_at": m.expires_at.isoformat()})
    return hold_model_to_hold(m)


def _open_hold(session: Session, hold_id: str, now: datetime) -> HoldModel:
    m = session.scalar(select(HoldModel).where(HoldModel.id == hold_id).with_for_update())
    if m is None:
        raise NotFound(f"hold {hold_id} not found")
    if m.status != "pending":
        raise Conflict(f"hold {hold_id} is {m.status}", status=m.status)
    if m.expires_at <= now:
        raise Conflict(f"hold {hold_id} has expired", status="expired")
    return m


def post_hold(session: Session, *, actor: audit.Actor, hold_id: str,
              amount: int | None = None, now: datetime | None = None) -> Hold:
    """Turn a hold into a transfer of ``amount`` (default: all of it); the rest is released."""
    now = now or utcnow()
    m = _open_hold(session, hold_id, now)
    amount = m.amount if amount is None else check_amount(amount)
    if amount > m.amount:
        raise ValidationFailed(f"cannot post {amount}: the hold reserved {m.amount}")
    # Close the hold first: its reservation is released as the transfer posts, so the
    # floor check sees the transfer and not both.
    m.status, m.posted_amount, m.closed_at = "posted", amount, now
    session.flush()
    post_transfers(session, [TransferSpec(
        debit_account_id=m.account_id, credit_account_id=m.counter_account_id, amount=amount,
        currency=m.currency, idempotency_key=f"hold:{m.id}", reason="hold_post", hold_id=m.id,
        cause_type=m.cause_type, cause_id=m.cause_id)], enforce_floor=False, now=now)
    audit.record(session, actor=actor, action="billing.hold.post", target_type="hold",
                 target_id=m.id, changes={"status": {"old": "pending", "new": "posted"}},
                 details={"posted_amount": amount, "released": m.amount - amount})
    return hold_model_to_hold(m)


def void_hold(session: Session, *, actor: audit.Actor, hold_id: str,
              now: datetime | None = None) -> Hold:
    now = now or utcnow()
    m = _open_hold(session, hold_id, now)
    m.status, m.closed_at = "voided", now
    audit.record(session, actor=actor, action="billing.hold.void", target_type="hold",
                 target_id=m.id, changes={"status": {"old": "pending", "new": "voided"}})
    return hold_model_to_hold(m)


def expire_holds(session: Session, *, now: datetime | None = None, limit: int = 500) -> int:
    """Mark holds past their expiry as expired (they already stopped reserving funds)."""
    now = now or utcnow()
    rows = session.scalars(select(HoldModel).where(
        HoldModel.status == "pending", HoldModel.expires_at <= now).limit(limit)
        .with_for_update(skip_locked=True)).all()
    for m in rows:
        m.status, m.closed_at = "expired", now
        audit.record(session, actor=audit.Actor.system("billing-holds"),
                     action="billing.hold.expire", target_type="hold", target_id=m.id,
                     changes={"status": {"old": "pending", "new": "expired"}})
    return len(rows)


def get_hold(session: Session, hold_id: str) -> Hold:
    m = session.get(HoldModel, hold_id)
    if m is None:
        raise NotFound(f"hold {hold_id} not found")
    return hold_model_to_hold(m)
