"""Organization wallets: balance, transfers, top-ups, adjustments, credit limits, statements.

Money enters or leaves a wallet by hand only through platform billing staff: top-ups,
adjustments and credit limits need their permission at the platform scope (a tenant's own
``billing.*`` never lets it mint credit or raise its overdraft). The org in the path is
authorized first, so another tenant's org is a 404 whatever the caller holds.
"""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Header, Query, Response

from aicloud.api.authz import Authorize, Caller, path_param
from aicloud.api.deps import RequestRoute
from aicloud.platform import billing, iam
from aicloud.shared.errors import ValidationFailed
from aicloud.shared.idempotency import MAX_KEY_LENGTH, validate_key

router = APIRouter(tags=["billing: wallets"], route_class=RequestRoute)

ORG = path_param("org_id")
Currency = Annotated[str, Query(description="ISO 4217 code of the wallet")]
Format = Annotated[Literal["json", "csv"], Query(description="json (default) or csv")]
LedgerReader = Annotated[Caller, Authorize("billing.ledger.read", scope=ORG)]
TopUpper = Annotated[Caller, Authorize("billing.topups.create", scope=ORG)]
Adjuster = Annotated[Caller, Authorize("billing.adjustments.create", scope=ORG)]
LimitSetter = Annotated[Caller, Authorize("billing.credit_limits.write", scope=ORG)]
StatementReader = Annotated[Caller, Authorize("billing.statements.read", scope=ORG)]
IdempotencyHeader = Annotated[str | None, Header(
    alias="Idempotency-Key", max_length=MAX_KEY_LENGTH,
    description="The ledger idempotency key (or send idempotency_key in the body)")]


def ledger_key(header: str | None, body_key: str | None) -> str:
    """The key the ledger deduplicates on: the Idempotency-Key header or the body's
    ``idempotency_key`` (equal when both are sent). Moving money without one is refused:
    a retry must never post twice."""
    if header is not None:
        validate_key(header)
    if header and body_key and header != body_key:
        raise ValidationFailed("Idempotency-Key header and body idempotency_key differ",
                               field="idempotency_key")
    key = header or body_key
    if not key:
        raise ValidationFailed("send an Idempotency-Key header or an idempotency_key",
                               field="idempotency_key")
    return key


@router.get("/orgs/{org_id}/wallet", response_model=billing.Balance)
def get_wallet(org_id: str, caller: LedgerReader, currency: Currency = "USD") -> billing.Balance:
    """Posted, held and available balance of the organization's wallet in one currency."""
    return billing.wallet_balance(caller.session, org_id, currency)


@router.get("/orgs/{org_id}/wallet/transfers", response_model=list[billing.Transfer])
def list_wallet_transfers(
    org_id: str, caller: LedgerReader, currency: Currency = "USD",
    after_seq: Annotated[int, Query(ge=0, description="seq of the last transfer seen")] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[billing.Transfer]:
    """Transfers touching the wallet, oldest first; page with ``after_seq``."""
    return billing.wallet_transfers(caller.session, org_id, currency, limit=limit,
                                    after_seq=after_seq)


@router.post("/orgs/{org_id}/top-ups", status_code=201, response_model=billing.Transfer)
def top_up(org_id: str, body: billing.TopUpBody, caller: TopUpper,
           idempotency_key: IdempotencyHeader = None) -> billing.Transfer:
    """Credit the wallet with funds received (platform billing staff). A retry with the
    same key returns the same transfer; the same key with another payload is a 409."""
    caller.require("billing.topups.create", iam.PLATFORM, hidden=False)
    return billing.top_up(caller.session, actor=caller.actor, org_id=org_id,
                          amount=body.amount, currency=body.currency,
                          idempotency_key=ledger_key(idempotency_key, body.idempotency_key),
                          reference=body.reference)


@router.post("/orgs/{org_id}/adjustments", status_code=201, response_model=billing.Transfer)
def adjust(org_id: str, body: billing.AdjustmentBody, caller: Adjuster,
           idempotency_key: IdempotencyHeader = None) -> billing.Transfer:
    """A goodwill credit (amount > 0) or manual charge (amount < 0), with a reason."""
    caller.require("billing.adjustments.create", iam.PLATFORM, hidden=False)
    return billing.adjust(caller.session, actor=caller.actor, org_id=org_id,
                          amount=body.amount, currency=body.currency,
                          idempotency_key=ledger_key(idempotency_key, body.idempotency_key),
                          note=body.reason)


@router.put("/orgs/{org_id}/credit-limit", response_model=billing.Account)
def set_credit_limit(org_id: str, body: billing.CreditLimitBody,
                     caller: LimitSetter) -> billing.Account:
    """How far below zero holds and manual charges may take the wallet (idempotent)."""
    caller.require("billing.credit_limits.write", iam.PLATFORM, hidden=False)
    return billing.set_credit_limit(caller.session, actor=caller.actor, org_id=org_id,
                                    currency=body.currency, credit_limit=body.credit_limit)


@router.get("/orgs/{org_id}/statements/{period}", response_model=billing.Statement,
            responses={200: {"content": {"text/csv": {}}}})
def get_statement(org_id: str, period: str, caller: StatementReader,
                  currency: Currency = "USD", format: Format = "json",
                  ) -> billing.Statement | Response:
    """The month's statement (period YYYY-MM): opening balance, lines by project, meter and
    price, closing balance; its totals equal the ledger."""
    statement = billing.build_statement(caller.session, org_id=org_id, period=period,
                                        currency=currency)
    if format == "csv":
        return Response(billing.statement_csv(statement), media_type="text/csv",
                        headers={"Content-Disposition":
                                 f'attachment; filename="statement-{org_id}-{period}.csv"'})
    return statement
