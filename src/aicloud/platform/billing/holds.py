"""Two-phase holds: reserve funds now (pending), then post all or part, void, or let expire.

A hold reserves funds on an account without moving them: available = posted - open holds.
Creating a hold locks the account row (PostgreSQL), so concurrent holds against one wallet
are decided one at a time and can never reserve more than the wallet can fund.

``create_hold`` / ``post_hold`` / ``void_hold`` work on any two accounts (GPUaaS admission
calls them in-process). The ``*_org_hold`` functions are what the REST API calls: the hold is
always on an organization's wallet in favour of the platform's revenue account of that
currency (a caller never picks the counter account), and a hold of another organization is
not found.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta

from sqlalchemy import and_, or_, select
from sqlalchemy.orm import Session

from aicloud.platform import audit
from aicloud.platform.billing.ledger import (
    TransferSpec,
    held_amount,
    lock_accounts,
    namespaced_key,
    normal_balance,
    org_wallet,
    platform_account,
    post_transfers,
)
from aicloud.platform.billing.models import AccountModel, HoldModel, TransferModel
from aicloud.platform.billing.money import check_amount, check_currency
from aicloud.platform.billing.schemas import Hold
from aicloud.shared.clock import utcnow
from aicloud.shared.errors import Conflict, NotFound, ValidationFailed
from aicloud.shared.idempotency import validate_key
from aicloud.shared.ids import new_id

MAX_TTL = timedelta(days=31)
HOLD_STATUSES = ("pending", "posted", "voided", "expired")
# Keys of holds created through create_org_hold (the REST API) live in their own namespace,
# so a client's key can never replay a hold another component created (e.g. gpuaas:<id>).
ORG_HOLD_KEY_PREFIX = "org-hold:"


def hold_model_to_hold(m: HoldModel, now: datetime | None = None) -> Hold:
    """With ``now``: a pending hold past its expiry reads as ``expired`` (it no longer
    reserves anything; the billing-hold-expiry controller marks the row later)."""
    status = m.status
    if now is not None and status == "pending" and m.expires_at <= now:
        status = "expired"
    return Hold(id=m.id, account_id=m.account_id, counter_account_id=m.counter_account_id,
                amount=m.amount, currency=m.currency, status=status,  # type: ignore[arg-type]
                posted_amount=m.posted_amount, reason=m.reason, cause_type=m.cause_type,
                cause_id=m.cause_id, expires_at=m.expires_at, created_at=m.created_at,
                closed_at=m.closed_at)


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
        if (existing.account_id, existing.counter_account_id, existing.amount,
                existing.currency, existing.reason, existing.cause_type, existing.cause_id,
                existing.expires_at - existing.created_at) != (
                account_id, counter_account_id, amount, currency, reason, cause_type,
                cause_id, ttl):
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
                 details={"account_id": account_id, "counter_account_id": counter_account_id,
                          "amount": amount, "currency": currency, "reason": reason,
                          "cause_type": cause_type, "cause_id": cause_id,
                          "expires_at": m.expires_at.isoformat()})
    return hold_model_to_hold(m)


def _lock_hold(session: Session, hold_id: str) -> HoldModel:
    m = session.scalar(select(HoldModel).where(HoldModel.id == hold_id).with_for_update())
    if m is None:
        raise NotFound(f"hold {hold_id} not found")
    return m


def _check_open(m: HoldModel, now: datetime) -> HoldModel:
    if m.status != "pending":
        raise Conflict(f"hold {m.id} is {m.status}", hold_status=m.status)
    if m.expires_at <= now:
        raise Conflict(f"hold {m.id} has expired", hold_status="expired")
    return m


def _open_hold(session: Session, hold_id: str, now: datetime) -> HoldModel:
    return _check_open(_lock_hold(session, hold_id), now)


def _scope_path(session: Session, account_id: str) -> str:
    return session.scalar(select(AccountModel.scope_path).where(
        AccountModel.id == account_id)) or "/"


def _post_key(session: Session, m: HoldModel) -> str | None:
    """The caller's idempotency key of a posted hold's post (kept on its transfer)."""
    meta = session.scalar(select(TransferModel.metadata_json).where(
        TransferModel.idempotency_key == f"hold:{m.id}"))
    return json.loads(meta).get("post_key") if meta else None


def post_hold(session: Session, *, actor: audit.Actor, hold_id: str,
              amount: int | None = None, idempotency_key: str | None = None,
              now: datetime | None = None) -> Hold:
    """Turn a hold into a transfer of ``amount`` (default: all of it); the rest is released.

    With ``idempotency_key`` a retry (same key, same amount) of a post that already happened
    returns the posted hold instead of a 409; the key is kept in the transfer's metadata."""
    now = now or utcnow()
    if amount is not None:
        check_amount(amount)
    if idempotency_key is not None:
        validate_key(idempotency_key)
    m = _lock_hold(session, hold_id)
    if m.status == "posted" and idempotency_key is not None and (
            _post_key(session, m) == idempotency_key):
        if (m.amount if amount is None else amount) != m.posted_amount:
            raise Conflict(f"idempotency key {idempotency_key!r} posted {m.posted_amount} "
                           f"of hold {m.id}, not {amount}", field="amount")
        return hold_model_to_hold(m)
    _check_open(m, now)
    amount = m.amount if amount is None else amount
    if amount > m.amount:
        raise ValidationFailed(f"cannot post {amount}: the hold reserved {m.amount}",
                               field="amount")
    # Close the hold first: its reservation is released as the transfer posts, so the
    # floor check sees the transfer and not both.
    m.status, m.posted_amount, m.closed_at = "posted", amount, now
    session.flush()
    post_transfers(session, [TransferSpec(
        debit_account_id=m.account_id, credit_account_id=m.counter_account_id, amount=amount,
        currency=m.currency, idempotency_key=f"hold:{m.id}", reason="hold_post", hold_id=m.id,
        cause_type=m.cause_type, cause_id=m.cause_id,
        metadata={"post_key": idempotency_key} if idempotency_key else {})],
        enforce_floor=False, now=now)
    audit.record(session, actor=actor, action="billing.hold.post", target_type="hold",
                 target_id=m.id, scope_path=_scope_path(session, m.account_id),
                 changes={"status": {"old": "pending", "new": "posted"}},
                 details={"posted_amount": amount, "released": m.amount - amount})
    return hold_model_to_hold(m)


def void_hold(session: Session, *, actor: audit.Actor, hold_id: str,
              now: datetime | None = None) -> Hold:
    """Release a pending hold. Voiding a voided hold returns it unchanged (a retry is safe);
    a posted or expired hold is a Conflict."""
    now = now or utcnow()
    m = _lock_hold(session, hold_id)
    if m.status == "voided":
        return hold_model_to_hold(m)
    _check_open(m, now)
    m.status, m.closed_at = "voided", now
    audit.record(session, actor=actor, action="billing.hold.void", target_type="hold",
                 target_id=m.id, scope_path=_scope_path(session, m.account_id),
                 changes={"status": {"old": "pending", "new": "voided"}})
    return hold_model_to_hold(m)


def expire_holds(session: Session, *, now: datetime | None = None, limit: int = 500) -> int:
    """Mark holds past their expiry as expired (they already stopped reserving funds)."""
    now = now or utcnow()
    rows = session.scalars(select(HoldModel).where(
        HoldModel.status == "pending", HoldModel.expires_at <= now).limit(limit)
        .with_for_update(skip_locked=True)).all()
    paths = dict(session.execute(select(AccountModel.id, AccountModel.scope_path).where(
        AccountModel.id.in_({m.account_id for m in rows}))).all()) if rows else {}
    for m in rows:
        m.status, m.closed_at = "expired", now
        audit.record(session, actor=audit.Actor.system("billing-holds"),
                     action="billing.hold.expire", target_type="hold", target_id=m.id,
                     scope_path=paths.get(m.account_id, "/"),
                     changes={"status": {"old": "pending", "new": "expired"}})
    return len(rows)


def get_hold(session: Session, hold_id: str) -> Hold:
    m = session.get(HoldModel, hold_id)
    if m is None:
        raise NotFound(f"hold {hold_id} not found")
    return hold_model_to_hold(m)


# --- holds on organization wallets (what the REST API calls) ----------------------------------


def create_org_hold(
    session: Session, *, actor: audit.Actor, org_id: str, amount: int, currency: str,
    idempotency_key: str, ttl: timedelta = timedelta(hours=1), reason: str = "api",
    cause_type: str | None = None, cause_id: str | None = None, now: datetime | None = None,
) -> Hold:
    """Reserve ``amount`` on the organization's wallet in favour of the platform's revenue
    account of the currency. Idempotent on the caller's key (its own namespace): the same
    key and request return the same hold, another request is a Conflict. Amount and
    currency are checked by create_hold, in the same transaction."""
    key = namespaced_key(ORG_HOLD_KEY_PREFIX, idempotency_key)
    if not timedelta(0) < ttl <= MAX_TTL:
        raise ValidationFailed("hold ttl must be between 1 second and 31 days",
                               field="ttl_seconds")
    if not reason.strip():
        raise ValidationFailed("a hold needs a reason", field="reason")
    wallet = org_wallet(session, org_id, currency)
    revenue = platform_account(session, "revenue", currency)
    return create_hold(session, actor=actor, account_id=wallet.id,
                       counter_account_id=revenue.id, amount=amount, currency=currency,
                       idempotency_key=key, ttl=ttl,
                       reason=reason, cause_type=cause_type, cause_id=cause_id, now=now)


def _org_holds():  # type: ignore[no-untyped-def]
    return select(HoldModel).join(AccountModel, AccountModel.id == HoldModel.account_id)


def _of_org(org_id: str):  # type: ignore[no-untyped-def]
    return and_(AccountModel.owner_type == "organization", AccountModel.owner_id == org_id,
                AccountModel.purpose == "wallet")


def _org_hold_model(session: Session, org_id: str, hold_id: str) -> HoldModel:
    m = session.scalar(_org_holds().where(HoldModel.id == hold_id, _of_org(org_id)))
    if m is None:
        raise NotFound(f"hold {hold_id} not found")
    return m


def get_org_hold(session: Session, org_id: str, hold_id: str,
                 now: datetime | None = None) -> Hold:
    """A hold on the organization's wallet (NotFound for another organization's hold)."""
    return hold_model_to_hold(_org_hold_model(session, org_id, hold_id), now or utcnow())


def list_org_holds(session: Session, org_id: str, *, status: str | None = None,
                   currency: str | None = None, after: str | None = None, limit: int = 50,
                   now: datetime | None = None) -> list[Hold]:
    """Holds on the organization's wallets, oldest first (ids sort by creation), after the
    id ``after``. ``status`` filters on what the hold is now: a pending hold past its
    expiry counts as expired."""
    now = now or utcnow()
    stmt = _org_holds().where(_of_org(org_id))
    if currency is not None:
        stmt = stmt.where(HoldModel.currency == check_currency(currency))
    if status == "pending":
        stmt = stmt.where(HoldModel.status == "pending", HoldModel.expires_at > now)
    elif status == "expired":
        stmt = stmt.where(or_(HoldModel.status == "expired", and_(
            HoldModel.status == "pending", HoldModel.expires_at <= now)))
    elif status is not None:
        if status not in HOLD_STATUSES:
            raise ValidationFailed(f"unknown hold status {status!r}; one of "
                                   f"{', '.join(HOLD_STATUSES)}", field="status")
        stmt = stmt.where(HoldModel.status == status)
    if after:
        stmt = stmt.where(HoldModel.id > after)
    rows = session.scalars(stmt.order_by(HoldModel.id).limit(limit))
    return [hold_model_to_hold(m, now) for m in rows]


def post_org_hold(session: Session, *, actor: audit.Actor, org_id: str, hold_id: str,
                  idempotency_key: str, amount: int | None = None,
                  now: datetime | None = None) -> Hold:
    """Post all (``amount`` None) or part of a hold of the organization: the wallet is
    debited, the revenue account credited, the rest released."""
    if amount is not None:
        check_amount(amount)
    _org_hold_model(session, org_id, hold_id)
    return post_hold(session, actor=actor, hold_id=hold_id, amount=amount,
                     idempotency_key=idempotency_key, now=now)


def void_org_hold(session: Session, *, actor: audit.Actor, org_id: str, hold_id: str,
                  now: datetime | None = None) -> Hold:
    """Release a hold of the organization without charging anything."""
    _org_hold_model(session, org_id, hold_id)
    return void_hold(session, actor=actor, hold_id=hold_id, now=now)
