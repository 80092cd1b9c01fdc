"""Holds on organization wallets over HTTP: reserve, then post all or part, or void.

A product running outside the API process (App SDK) reserves funds at admission and charges
them later through these routes, as GPUaaS does in-process. The counter account is always the
platform's revenue account of the currency: a client never chooses where the money goes, so a
hold can only ever charge a wallet in favour of the platform.

Creating, posting and voiding move or reserve money: they need ``billing.holds.write`` on the
org (so another tenant's org is a 404) *and* at the platform scope (else 403), like top-ups; an
org owner's ``billing.*`` lets it read its holds, never make one. Reading needs
``billing.holds.read`` on the org.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Literal

from fastapi import APIRouter, Body, Query

from aicloud.api.authz import Authorize, Caller, path_param
from aicloud.api.deps import RequestRoute
from aicloud.api.listing import DEFAULT, Cursor, Limit, page
from aicloud.api.routes.billing_wallet import IdempotencyHeader, ledger_key
from aicloud.platform import billing, iam
from aicloud.shared.pagination import Page

router = APIRouter(tags=["billing: holds"], route_class=RequestRoute)

ORG = path_param("org_id")
HoldReader = Annotated[Caller, Authorize("billing.holds.read", scope=ORG)]
HoldWriter = Annotated[Caller, Authorize("billing.holds.write", scope=ORG)]
Status = Annotated[Literal["pending", "posted", "voided", "expired"] | None, Query(
    description="only holds in this state now (a pending hold past its expiry is expired)")]
CurrencyFilter = Annotated[str | None, Query(description="only holds in this ISO 4217 code")]


def _require_platform(caller: Caller) -> None:
    caller.require("billing.holds.write", iam.PLATFORM, hidden=False)


@router.post("/orgs/{org_id}/holds", status_code=201, response_model=billing.Hold)
def create_hold(org_id: str, body: billing.HoldBody, caller: HoldWriter,
                idempotency_key: IdempotencyHeader = None) -> billing.Hold:
    """Reserve an amount on the organization's wallet until ``ttl_seconds`` pass (409 when
    the available balance cannot fund it). A retry with the same key returns the same hold
    (201 again); the same key with another request is a 409."""
    _require_platform(caller)
    return billing.create_org_hold(
        caller.session, actor=caller.actor, org_id=org_id, amount=body.amount,
        currency=body.currency, idempotency_key=ledger_key(idempotency_key,
                                                           body.idempotency_key),
        ttl=timedelta(seconds=body.ttl_seconds), reason=body.reason,
        cause_type=body.cause_type, cause_id=body.cause_id)


@router.get("/orgs/{org_id}/holds", response_model=Page[billing.Hold])
def list_holds(org_id: str, caller: HoldReader, status: Status = None,
               currency: CurrencyFilter = None, cursor: Cursor = None,
               limit: Limit = DEFAULT) -> Page[billing.Hold]:
    """Holds on the organization's wallets, oldest first (GPUaaS admission holds too)."""
    return page(lambda after, n: billing.list_org_holds(
        caller.session, org_id, status=status, currency=currency, after=after, limit=n),
        cursor, limit)


@router.get("/orgs/{org_id}/holds/{hold_id}", response_model=billing.Hold)
def get_hold(org_id: str, hold_id: str, caller: HoldReader) -> billing.Hold:
    """One hold of the organization (another organization's hold id is a 404)."""
    return billing.get_org_hold(caller.session, org_id, hold_id)


@router.post("/orgs/{org_id}/holds/{hold_id}/post", response_model=billing.Hold)
def post_hold(org_id: str, hold_id: str, caller: HoldWriter,
              body: Annotated[billing.HoldPostBody | None, Body()] = None,
              idempotency_key: IdempotencyHeader = None) -> billing.Hold:
    """Charge all of the hold (no amount) or part of it: the wallet is debited, the
    platform's revenue credited, the rest released. A retry with the same key and amount
    returns the posted hold; posting a posted, voided or expired hold otherwise is a 409,
    more than the hold reserved a 422."""
    _require_platform(caller)
    body = body or billing.HoldPostBody()
    return billing.post_org_hold(
        caller.session, actor=caller.actor, org_id=org_id, hold_id=hold_id,
        amount=body.amount, idempotency_key=ledger_key(idempotency_key, body.idempotency_key))


@router.post("/orgs/{org_id}/holds/{hold_id}/void", response_model=billing.Hold)
def void_hold(org_id: str, hold_id: str, caller: HoldWriter) -> billing.Hold:
    """Release the hold without charging anything. Voiding it again returns it unchanged;
    a posted or expired hold is a 409."""
    _require_platform(caller)
    return billing.void_org_hold(caller.session, actor=caller.actor, org_id=org_id,
                                 hold_id=hold_id)
