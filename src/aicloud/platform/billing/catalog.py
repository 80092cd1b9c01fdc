"""Meters and versioned, effective-dated price lists.

A price list version is never edited: a price change is a new version with a later
``effective_from``. Usage is rated with the version in effect at the start of its window, and
a rated charge never changes afterwards.
"""

from __future__ import annotations

from bisect import bisect_right
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from aicloud.platform import audit
from aicloud.platform.billing.models import MeterModel, PriceListModel, PriceModel
from aicloud.platform.billing.money import check_currency, round_half_up_div
from aicloud.platform.billing.schemas import Meter, PriceIn, PriceList, PriceListCreate
from aicloud.platform.billing.scopes import check_org
from aicloud.shared.clock import utcnow
from aicloud.shared.errors import NotFound, ValidationFailed
from aicloud.shared.ids import new_id

DEFAULT_METERS = (
    Meter(name="gpu_seconds", unit="second", dimension="gpu_model", product="gpuaas",
          description="GPU time, by GPU model"),
    Meter(name="vcpu_seconds", unit="second", product="gpuaas", description="vCPU time"),
    Meter(name="memory_gib_seconds", unit="GiB-second", product="gpuaas",
          description="Memory reserved over time"),
    Meter(name="storage_gib_hours", unit="GiB-hour", product="gpuaas",
          description="Persistent storage over time"),
    Meter(name="endpoint_requests", unit="request", dimension="status_class", product="access",
          description="Requests served by an API endpoint, by status class (2xx, 4xx, 5xx)"),
)


def declare_meter(session: Session, meter: Meter) -> Meter:
    """Declare a meter (called by the product registry). Re-declaring the same meter is a
    no-op; changing the unit of an existing meter would re-price old usage and is refused."""
    existing = session.get(MeterModel, meter.name)
    if existing is not None:
        if (existing.unit, existing.dimension) != (meter.unit, meter.dimension):
            raise ValidationFailed(f"meter {meter.name} is already declared with unit "
                                   f"{existing.unit!r} and dimension {existing.dimension!r}")
        return meter_model_to_meter(existing)
    session.add(MeterModel(name=meter.name, unit=meter.unit, dimension=meter.dimension,
                           product=meter.product, description=meter.description,
                           created_at=utcnow()))
    session.flush()
    audit.record(session, actor=audit.Actor.system(f"registry:{meter.product}"),
                 action="billing.meter.declare", target_type="meter", target_id=meter.name,
                 changes=audit.diff(None, meter.model_dump()))
    return meter


def register_default_meters(session: Session) -> list[Meter]:
    return [declare_meter(session, m) for m in DEFAULT_METERS]


def meter_model_to_meter(m: MeterModel) -> Meter:
    return Meter(name=m.name, unit=m.unit, dimension=m.dimension, product=m.product,
                 description=m.description)


def list_meters(session: Session) -> list[Meter]:
    return [meter_model_to_meter(m)
            for m in session.scalars(select(MeterModel).order_by(MeterModel.name))]


def create_price_list(session: Session, *, actor: audit.Actor, spec: PriceListCreate) -> PriceList:
    """Publish a new price list version (the default list when org_id is None)."""
    check_currency(spec.currency)
    if spec.org_id is not None:
        check_org(session, spec.org_id)
    if spec.effective_from.tzinfo is None:
        raise ValidationFailed("effective_from must carry a time zone", field="effective_from")
    meters = {m.name for m in session.scalars(select(MeterModel))}
    seen: set[tuple[str, str]] = set()
    for p in spec.prices:
        if p.meter not in meters:
            raise ValidationFailed(f"unknown meter {p.meter!r}", field="meter")
        if (p.meter, p.dimension_value) in seen:
            raise ValidationFailed(f"price for {p.meter}/{p.dimension_value!r} repeats")
        seen.add((p.meter, p.dimension_value))
    org = spec.org_id or ""
    if not org and not spec.prices:
        raise ValidationFailed("the default price list needs at least one price")
    version = (session.scalar(select(func.max(PriceListModel.version)).where(
        PriceListModel.org_id == org)) or 0) + 1
    m = PriceListModel(id=new_id("plist"), org_id=org, version=version, currency=spec.currency,
                       effective_from=spec.effective_from, discount_bp=spec.discount_bp,
                       created_at=utcnow(), created_by=actor.id)
    session.add(m)
    for p in spec.prices:
        session.add(PriceModel(id=new_id("price"), price_list_id=m.id, meter=p.meter,
                               dimension_value=p.dimension_value, unit_price=p.unit_price,
                               per_quantity=p.per_quantity))
    session.flush()
    out = PriceList(id=m.id, org_id=spec.org_id, version=version, currency=spec.currency,
                    effective_from=spec.effective_from, discount_bp=spec.discount_bp,
                    prices=list(spec.prices))
    audit.record(session, actor=actor, action="billing.price_list.create",
                 target_type="price_list", target_id=m.id,
                 scope_path=f"/{org}" if org else "/",
                 changes=audit.diff(None, out.model_dump(mode="json")))
    return out


@dataclass(frozen=True)
class ResolvedPrice:
    """What one unit of a meter costs for one organization at one instant."""

    price_id: str
    currency: str
    unit_price: int
    per_quantity: int
    discount_bp: int

    def charge_for(self, quantity: int) -> int:
        return round_half_up_div(quantity * self.unit_price * (10_000 - self.discount_bp),
                                 self.per_quantity * 10_000)


@dataclass(frozen=True)
class _ListVersion:
    id: str
    currency: str
    discount_bp: int


class PriceBook:
    """All price list versions in memory: the rater resolves thousands of records per batch
    without a query per record. Price lists are few and small."""

    def __init__(self, session: Session):
        L, P = PriceListModel, PriceModel
        self._starts: dict[str, list[datetime]] = {}
        self._versions: dict[str, list[_ListVersion]] = {}
        self._prices: dict[tuple[str, str, str], tuple[str, int, int]] = {}
        # One query (each batch of usage builds a book). Ascending by start; among versions
        # with the same start the newest one wins.
        last = None
        for org, lid, currency, discount, start, _, pid, meter, dim, unit_price, per_quantity \
                in session.execute(select(
                    L.org_id, L.id, L.currency, L.discount_bp, L.effective_from, L.version,
                    P.id, P.meter, P.dimension_value, P.unit_price, P.per_quantity)
                    .outerjoin(P, P.price_list_id == L.id)
                    .order_by(L.org_id, L.effective_from, L.version, L.id)):
            if lid != last:
                last = lid
                self._starts.setdefault(org, []).append(start)
                self._versions.setdefault(org, []).append(_ListVersion(lid, currency, discount))
            if pid is not None:
                self._prices[lid, meter, dim] = (pid, unit_price, per_quantity)
        self._memo: dict[tuple[str, str, str, str, str], ResolvedPrice] = {}

    def _in_effect(self, org: str, at: datetime) -> _ListVersion | None:
        i = bisect_right(self._starts.get(org, ()), at)
        return self._versions[org][i - 1] if i else None

    def _find(self, pl: _ListVersion, meter: str,
              dimension_value: str) -> tuple[str, int, int] | None:
        return (self._prices.get((pl.id, meter, dimension_value))
                or self._prices.get((pl.id, meter, "")))

    def resolve(self, org_id: str, meter: str, dimension_value: str,
                at: datetime) -> ResolvedPrice:
        contract = self._in_effect(org_id, at)
        default = self._in_effect("", at)
        key = (org_id, meter, dimension_value, contract.id if contract else "",
               default.id if default else "")
        found = self._memo.get(key)
        if found is None:
            found = self._memo[key] = self._resolve(org_id, meter, dimension_value, at,
                                                    contract, default)
        return found

    def _resolve(self, org_id: str, meter: str, dimension_value: str, at: datetime,
                 contract: _ListVersion | None, default: _ListVersion | None) -> ResolvedPrice:
        if contract is not None:
            price = self._find(contract, meter, dimension_value)
            if price is not None:
                return ResolvedPrice(price[0], contract.currency, price[1], price[2], 0)
        if default is None:
            raise NotFound(f"no default price list is in effect at {at.isoformat()}")
        price = self._find(default, meter, dimension_value)
        if price is None:
            raise NotFound(f"no price for meter {meter!r} ({dimension_value or 'any'}) at "
                           f"{at.isoformat()}")
        discount = contract.discount_bp if contract is not None else 0
        if contract is not None and contract.currency != default.currency:
            raise ValidationFailed(f"contract of {org_id} is in {contract.currency} but prices "
                                   f"{meter} only through the {default.currency} default list")
        return ResolvedPrice(price[0], default.currency, price[1], price[2], discount)


def get_price_list(session: Session, price_list_id: str) -> PriceList:
    m = session.get(PriceListModel, price_list_id)
    if m is None:
        raise NotFound(f"price list {price_list_id} not found")
    return _price_list(session, m)


def list_price_lists(session: Session, org_id: str | None = None) -> list[PriceList]:
    """Every version of the default list (``org_id`` None) or of one org's contract."""
    rows = session.scalars(select(PriceListModel).where(
        PriceListModel.org_id == (org_id or "")).order_by(PriceListModel.currency,
                                                          PriceListModel.version))
    return [_price_list(session, m) for m in rows]


def _price_list(session: Session, m: PriceListModel) -> PriceList:
    prices = session.scalars(select(PriceModel).where(PriceModel.price_list_id == m.id))
    return PriceList(id=m.id, org_id=m.org_id or None, version=m.version, currency=m.currency,
                     effective_from=m.effective_from, discount_bp=m.discount_bp,
                     prices=[PriceIn(meter=p.meter, dimension_value=p.dimension_value,
                                     unit_price=p.unit_price, per_quantity=p.per_quantity)
                             for p in prices])
