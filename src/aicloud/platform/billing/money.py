"""Money rules: integer micro-units, a small set of ISO 4217 currencies, sane magnitudes."""

from __future__ import annotations

from aicloud.shared.errors import ValidationFailed

MICROS_PER_UNIT = 1_000_000
CURRENCIES = frozenset({"USD", "EUR", "GBP", "CHF", "JPY", "CAD", "AUD"})
DEFAULT_CURRENCY = "USD"
# One billion currency units per transfer: far above any real transfer, and thousands of
# them still sum below the BIGINT limit (9.2e18 micro-units).
MAX_AMOUNT = 10**9 * MICROS_PER_UNIT
MAX_QUANTITY = 10**13


def check_currency(currency: object, field: str = "currency") -> str:
    if not isinstance(currency, str) or currency not in CURRENCIES:
        raise ValidationFailed(
            f"unknown currency {currency!r}; allowed: {', '.join(sorted(CURRENCIES))}",
            field=field)
    return currency


def check_amount(amount: object, field: str = "amount", *, allow_zero: bool = False) -> int:
    """A positive integer number of micro-units (floats and bools are refused, not rounded)."""
    if isinstance(amount, bool) or not isinstance(amount, int):
        raise ValidationFailed(f"{field} must be an integer number of micro-units", field=field)
    if amount < 0 or (amount == 0 and not allow_zero):
        raise ValidationFailed(f"{field} must be {'non-negative' if allow_zero else 'positive'}",
                               field=field)
    if amount > MAX_AMOUNT:
        raise ValidationFailed(f"{field} exceeds the maximum of {MAX_AMOUNT} micro-units",
                               field=field)
    return amount


def round_half_up_div(numerator: int, denominator: int) -> int:
    """numerator / denominator rounded half up, in exact integer arithmetic."""
    return (2 * numerator + denominator) // (2 * denominator)
