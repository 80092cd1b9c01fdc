"""Meters, price lists and usage ingestion.

Prices are set by platform billing operators only (``billing.prices.write`` at the platform
scope), for the default list and for organization contracts alike: a tenant's ``billing.*``
lets it read its contract, never write it. Usage comes from products and services holding
``billing.usage.write`` at the platform scope.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError

from aicloud.api.authz import PLATFORM_SCOPE, Authenticated, Authorize, Caller, path_param
from aicloud.api.deps import RequestRoute
from aicloud.api.json_body import is_json
from aicloud.platform import billing, iam

router = APIRouter(tags=["billing: catalog and usage"], route_class=RequestRoute)

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


def _inline_schema(model: type[billing.UsageBatch]) -> dict[str, Any]:
    """The model's JSON schema with its $defs inlined (an operation's schema cannot carry
    $defs: a $ref resolves against the whole OpenAPI document)."""
    schema = model.model_json_schema()
    defs = schema.pop("$defs", {})

    def inline(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref", "")
            if ref.startswith("#/$defs/"):
                return inline(defs[ref.removeprefix("#/$defs/")])
            return {k: inline(v) for k, v in node.items()}
        return [inline(v) for v in node] if isinstance(node, list) else node
    return inline(schema)  # type: ignore[no-any-return]


async def usage_batch(request: Request) -> billing.UsageBatch:
    """The body, parsed and validated from its bytes in one pass by pydantic-core. FastAPI's
    own path parses it into Python objects and validates those, about three times the work
    on a 1,000-record batch. Declared after the caller, so authorization runs first. The
    strict-JSON middleware has refused duplicate keys and
    NaN before this runs; a body not declared as JSON never reaches it, so it is refused."""
    body = await request.body()
    if not is_json(request.scope):
        raise RequestValidationError([{"loc": ("body",), "type": "content_type",
                                       "msg": "the body must be application/json"}])
    try:
        return billing.UsageBatch.model_validate_json(body)
    except ValidationError as exc:
        raise RequestValidationError(
            [{**e, "loc": ("body", *e["loc"])} for e in exc.errors(include_url=False)],
            body=body) from None


@router.post("/usage", response_model=billing.IngestResult, openapi_extra={"requestBody": {
    "content": {"application/json": {"schema": _inline_schema(billing.UsageBatch)}},
    "required": True}})
def ingest_usage(caller: Annotated[Caller, Authorize("billing.usage.write",
                                                     scope=PLATFORM_SCOPE)],
                 body: Annotated[billing.UsageBatch, Depends(usage_batch)],
                 ) -> billing.IngestResult:
    """Store a batch of usage records (all or nothing). A key already stored with the same
    payload counts as a duplicate; with another payload the batch is a 409."""
    return billing.ingest_usage(caller.session, body.records, actor=caller.actor)
