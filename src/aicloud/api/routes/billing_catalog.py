"""Meters, price lists and usage ingestion.

Prices are set by platform billing operators only (``billing.prices.write`` at the platform
scope), for the default list and for organization contracts alike: a tenant's ``billing.*``
lets it read its contract, never write it. Usage comes from products and services holding
``billing.usage.write`` at the platform scope.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter

from aicloud.api.authz import PLATFORM_SCOPE, Authenticated, Authorize, Caller, path_param
from aicloud.platform import billing, iam

router = APIRouter(tags=["billing: catalog and usage"])

ORG = path_param("org_id")
PriceWriter = Annotated[Caller, Authorize("billing.prices.write", scope=PLATFORM_SCOPE)]


@router.get("/meters", response_model=list[billing.Meter])
def list_meters(caller: Authenticated) -> list[billing.Meter]:
    """What products meter (the catalog is the same for everyone)."""
    return billing.list_meters(caller.session)


@router.get("/price-lists", response_model=list[billing.PriceList])
def list_default_price_lists(caller: Authenticated) -> list[billing.PriceList]:
    """Every version of the platform's default (public) price list."""
    return billing.list_price_lists(caller.session)


@router.post("/price-lists", status_code=201, response_model=billing.PriceList)
def create_default_price_list(body: billing.PriceListBody,
                              caller: PriceWriter) -> billing.PriceList:
    """A new version of the default price list (platform billing operators)."""
    return billing.create_price_list(caller.session, actor=caller.actor,
                                     spec=billing.PriceListCreate(**body.model_dump()))


@router.get("/orgs/{org_id}/price-lists", response_model=list[billing.PriceList])
def list_org_price_lists(
    org_id: str, caller: Annotated[Caller, Authorize("billing.prices.read", scope=ORG)],
) -> list[billing.PriceList]:
    """Every version of the organization's contract (discount and specific prices)."""
    return billing.list_price_lists(caller.session, org_id)


@router.post("/orgs/{org_id}/price-lists", status_code=201, response_model=billing.PriceList)
def create_org_price_list(
    org_id: str, body: billing.PriceListBody,
    caller: Annotated[Caller, Authorize("billing.prices.write", scope=ORG)],
) -> billing.PriceList:
    """A new version of the organization's contract (platform billing operators only)."""
    caller.require("billing.prices.write", iam.PLATFORM, hidden=False)
    return billing.create_price_list(caller.session, actor=caller.actor,
                                     spec=billing.PriceListCreate(org_id=org_id,
                                                                  **body.model_dump()))


@router.post("/usage", response_model=billing.IngestResult)
def ingest_usage(body: billing.UsageBatch,
                 caller: Annotated[Caller, Authorize("billing.usage.write",
                                                     scope=PLATFORM_SCOPE)],
                 ) -> billing.IngestResult:
    """Store a batch of usage records (all or nothing). A key already stored with the same
    payload counts as a duplicate; with another payload the batch is a 409."""
    return billing.ingest_usage(caller.session, body.records, actor=caller.actor)
