"""``aicloud billing``: tenant and billing-staff commands over the API, plus operator
commands that act on the database directly (``rate-once``, ``register-meters``, shown in
their own help panel).

Amounts on the command line are in currency units ("12.50"); the API takes integer
micro-units, converted exactly (never through a float).
"""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Annotated, Any

import typer

from aicloud.cli.common import ProfileOption, context_or_exit
from aicloud.cli.output import OutputFormat, OutputOption, emit, err_console, fail
from aicloud.cli.resource_cmd import Action, Opt, Values, add_actions, resource_app
from aicloud.platform import billing
from aicloud.shared.db import migrate

app = typer.Typer(help="Billing: wallets, top-ups, holds, budgets, statements, cost reports, "
                       "prices (over the API); rating and meters (operator, on the database).",
                  no_args_is_help=True)
OPERATOR = "Operator (acts on the database directly)"


def _ctx(profile: str | None):  # type: ignore[no-untyped-def]
    ctx = context_or_exit(profile)
    if not migrate.is_up_to_date(ctx.db):
        raise fail("the database schema is not at head; run `aicloud db upgrade` first", 2)
    return ctx


@app.command("rate-once", rich_help_panel=OPERATOR)
def rate_once(
    profile: ProfileOption = None,
    batch_size: Annotated[int, typer.Option(min=1, max=10_000, help="Records per transaction.")]
    = 2000,
    output: OutputOption = OutputFormat.table,
) -> None:
    """Rate every waiting usage record now (what the billing-rater controller does)."""
    ctx = _ctx(profile)
    with err_console.status("rating usage…"):
        # Also waits for records a running rater has claimed, so nothing is left waiting.
        n = billing.rate_until_idle(ctx.db, batch_size=batch_size, max_batches=10**9,
                                    settle_seconds=30)
    emit({"rated": n}, output)


@app.command("register-meters", rich_help_panel=OPERATOR)
def register_meters(profile: ProfileOption = None,
                    output: OutputOption = OutputFormat.table) -> None:
    """Declare the built-in meters (gpu_seconds, vcpu_seconds, ...); safe to repeat."""
    ctx = _ctx(profile)
    with ctx.db.transaction() as session:
        billing.register_default_meters(session)
        meters = billing.list_meters(session)
    emit(meters, output, columns=["name", "unit", "dimension", "product"])


# --- over the API ----------------------------------------------------------------------------


# What a person types for money: digits, at most 6 decimals, a sign only where allowed.
# Decimal() alone would also take "1e3", "1_000", " 5", "+5", "NaN" and "Infinity".
_AMOUNT = re.compile(r"-?[0-9]+(\.[0-9]{1,6})?")
_COUNT = re.compile(r"[0-9]+")


def micros(text: str | None, *, signed: bool = False) -> int:
    """'12.50' currency units -> 12_500_000 micro-units, exactly (never through a float)."""
    if text is None or not _AMOUNT.fullmatch(text):
        raise typer.BadParameter(f"{text!r}: not an amount like 12.50 (at most 6 decimals)")
    if text.startswith("-") and not signed:
        raise typer.BadParameter("the amount must be positive")
    scaled = Decimal(text) * billing.MICROS_PER_UNIT
    if not signed and scaled <= 0:
        raise typer.BadParameter("the amount must be positive")
    return int(scaled)


def whole_number(text: str, option: str) -> int:
    """A count typed by a person: plain digits only (int() would take "1_000" and " 7")."""
    if not _COUNT.fullmatch(text):
        raise typer.BadParameter(f"--{option} {text!r}: a whole number (digits only)")
    return int(text)


def _compact(values: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in values.items() if v is not None}


ORG = Opt("org", "Organization id.", required=True)
CURRENCY = Opt("currency", "ISO 4217 code (default USD).")
KEY = Opt("key", "Idempotency key: re-running with the same key never posts twice.",
          required=True)
FORMAT = Opt("format", "json (default) or csv (printed as is).")


def _cur(v: Values) -> str:
    return v.get("currency") or "USD"


def _csv(v: Values) -> bool:
    return v.get("format") == "csv"


TRANSFER_COLUMNS = ["seq", "id", "reason", "amount", "currency", "debit_account_id",
                    "credit_account_id", "posted_at"]

add_actions(app, [
    Action("wallet", "Show an organization's wallet: posted, held and available balance.",
           "GET", lambda v: f"/orgs/{v['org']}/wallet", opts=[ORG, CURRENCY],
           query=lambda v: {"currency": _cur(v)}),
    Action("transfers", "List the transfers of an organization's wallet, oldest first.",
           "GET", lambda v: f"/orgs/{v['org']}/wallet/transfers",
           opts=[ORG, CURRENCY, Opt("after_seq", "Only transfers after this seq.")],
           query=lambda v: _compact({"currency": _cur(v), "after_seq": v.get("after_seq")}),
           columns=TRANSFER_COLUMNS),
    Action("top-up", "Credit an organization's wallet with funds received (billing staff).",
           "POST", lambda v: f"/orgs/{v['org']}/top-ups",
           opts=[ORG, Opt("amount", "Amount in currency units, e.g. 50.00.", required=True),
                 CURRENCY, KEY, Opt("reference", "Payment or invoice reference.")],
           body=lambda v: _compact({"amount": micros(v["amount"]), "currency": _cur(v),
                                    "idempotency_key": v["key"],
                                    "reference": v.get("reference")})),
    Action("adjust", "Credit (positive) or charge (negative) an organization by hand, with a "
           "reason (billing staff).", "POST", lambda v: f"/orgs/{v['org']}/adjustments",
           opts=[ORG, Opt("amount", "Signed amount in currency units, e.g. -5.00.",
                          required=True),
                 CURRENCY, KEY, Opt("reason", "Why (kept on the transfer).", required=True)],
           body=lambda v: {"amount": micros(v["amount"], signed=True), "currency": _cur(v),
                           "idempotency_key": v["key"], "reason": v["reason"]}),
    Action("credit-limit", "Set how far below zero an organization's wallet may go "
           "(billing staff).", "PUT", lambda v: f"/orgs/{v['org']}/credit-limit",
           opts=[ORG, Opt("limit", "Credit limit in currency units, e.g. 100.", required=True),
                 CURRENCY],
           body=lambda v: {"currency": _cur(v), "credit_limit": micros(v["limit"])}),
    Action("meters", "List what products meter.", "GET", lambda v: "/meters",
           columns=["name", "unit", "dimension", "product"]),
    Action("alerts", "List budget alerts at and below a scope, newest first.", "GET",
           lambda v: f"/scopes/{v['scope']}/budget-alerts",
           opts=[Opt("scope", "Organization, department or project id.", required=True),
                 Opt("period", "Only this month (YYYY-MM).")],
           query=lambda v: _compact({"period": v.get("period")}),
           columns=["created_at", "budget_id", "scope_path", "period", "threshold", "spend",
                    "amount", "action"]),
    Action("statement", "An organization's monthly statement (opening and closing balance, "
           "lines by project, meter and price).", "GET",
           lambda v: f"/orgs/{v['org']}/statements/{v['period']}",
           opts=[ORG, Opt("period", "Month, YYYY-MM.", required=True), CURRENCY, FORMAT],
           query=lambda v: {"currency": _cur(v), "format": v.get("format") or "json"},
           raw_text=_csv),
    Action("cost-report", "Spend at and below a scope for [from, to), grouped (chargeback).",
           "GET", lambda v: f"/scopes/{v['scope']}/cost-report",
           opts=[Opt("scope", "Organization, department or project id.", required=True),
                 Opt("from_", "Start (inclusive), ISO date or time; this month by default.",
                     flag="--from"),
                 Opt("to", "End (exclusive), ISO date or time."),
                 Opt("group_by", "Comma-separated: organization, department, project, user, "
                                 "meter, day (default project)."),
                 FORMAT],
           query=lambda v: _compact({"from": _when(v.get("from_")), "to": _when(v.get("to")),
                                     "group_by": v.get("group_by"),
                                     "format": v.get("format")}),
           raw_text=_csv),
])


def _when(text: str | None) -> str | None:
    """A bare date means its midnight UTC (the API wants a time zone)."""
    if text is None or "T" in text:
        return text
    return f"{text}T00:00:00+00:00"


app.add_typer(resource_app("Monthly budgets at any scope (alerts at thresholds, an action at "
                           "100%).", [
    Action("list", "List budgets at and below a scope.", "GET",
           lambda v: f"/scopes/{v['scope']}/budgets",
           opts=[Opt("scope", "Organization, department or project id.", required=True)],
           columns=["id", "scope_path", "amount", "currency", "thresholds", "action"]),
    Action("create", "Create a monthly budget for a scope.", "POST",
           lambda v: f"/scopes/{v['scope']}/budgets",
           opts=[Opt("scope", "Organization, department or project id.", required=True),
                 Opt("amount", "Monthly amount in currency units.", required=True), CURRENCY,
                 Opt("threshold", "Alert threshold in percent (repeatable; default 50 80 "
                                  "100).", multiple=True),
                 Opt("action", "At 100%: notify (default), block_launches, stop_workloads."),
                 Opt("webhook_url", "Where signed alert webhooks are POSTed."),
                 Opt("webhook_secret", "HMAC key for the webhook signature.")],
           body=lambda v: _compact({
               "amount": micros(v["amount"]), "currency": _cur(v),
               "thresholds": ([whole_number(t, "threshold") for t in v["threshold"]]
                              if v.get("threshold") else None),
               "action": v.get("action"), "webhook_url": v.get("webhook_url"),
               "webhook_secret": v.get("webhook_secret")})),
    Action("get", "Show a budget.", "GET", lambda v: f"/budgets/{v['id']}", arg="id"),
    Action("delete", "Delete a budget.", "DELETE", lambda v: f"/budgets/{v['id']}", arg="id"),
]), name="budgets")

PRICE_COLUMNS = ["id", "org_id", "version", "currency", "effective_from", "discount_bp"]


def _prices_body(v: Values) -> dict[str, Any]:
    prices = []
    for spec in v.get("price") or []:
        # METER:DIMENSION=AMOUNT/PER, dimension and per optional
        try:
            target, _, cost = spec.partition("=")
            meter, _, dimension = target.partition(":")
            amount, _, per = cost.partition("/")
            prices.append({"meter": meter, "dimension_value": dimension,
                           "unit_price": micros(amount),
                           "per_quantity": whole_number(per or "1", "price")})
        except ValueError:
            raise typer.BadParameter(
                f"--price {spec!r}: use meter[:dimension]=amount[/per]") from None
    return _compact({"currency": _cur(v), "effective_from": v["effective_from"],
                     "discount_bp": (whole_number(v["discount_bp"], "discount-bp")
                                     if v.get("discount_bp") else None),
                     "prices": prices})


app.add_typer(resource_app("Price lists: the default list and organization contracts "
                           "(writing is for platform billing staff).", [
    Action("list", "List price list versions: the default list, or an organization's "
           "contract with --org.", "GET",
           lambda v: f"/orgs/{v['org']}/price-lists" if v.get("org") else "/price-lists",
           opts=[Opt("org", "Organization id (its contract).")], columns=PRICE_COLUMNS),
    Action("create", "Publish a new price list version (default, or a contract with --org).",
           "POST",
           lambda v: f"/orgs/{v['org']}/price-lists" if v.get("org") else "/price-lists",
           opts=[Opt("org", "Organization id (a contract); the default list if omitted."),
                 CURRENCY,
                 Opt("effective_from", "When it takes effect (ISO time with zone).",
                     required=True),
                 Opt("discount_bp", "Contract discount in basis points off the default."),
                 Opt("price", "METER:DIMENSION=AMOUNT/PER_QUANTITY (dimension and per "
                              "optional), e.g. gpu_seconds:H100=2.50/3600 (repeatable).",
                     multiple=True)],
           body=_prices_body),
]), name="prices")

HOLD_COLUMNS = ["id", "status", "amount", "posted_amount", "currency", "reason", "cause_id",
                "expires_at"]
HOLD_ORG = Opt("org", "Organization id (whose wallet holds it).", required=True)


def _hold_body(v: Values) -> dict[str, Any]:
    ttl = whole_number(v["ttl"], "ttl") if v.get("ttl") else None
    return _compact({"amount": micros(v["amount"]), "currency": _cur(v), "ttl_seconds": ttl,
                     "reason": v["reason"], "cause_type": v.get("cause_type"),
                     "cause_id": v.get("cause_id"), "idempotency_key": v["key"]})


app.add_typer(resource_app("Holds on an organization's wallet: reserve funds, then post all "
                           "or part, or void; holds expire. Creating, posting and voiding is "
                           "for platform billing staff and products; the org reads its own.", [
    Action("list", "List the holds on an organization's wallets, oldest first.", "GET",
           lambda v: f"/orgs/{v['org']}/holds",
           opts=[HOLD_ORG, Opt("status", "pending, posted, voided or expired."),
                 Opt("currency", "Only holds in this ISO 4217 code.")],
           query=lambda v: _compact({"status": v.get("status"),
                                     "currency": v.get("currency")}),
           paginated=True, columns=HOLD_COLUMNS),
    Action("show", "Show one hold.", "GET", lambda v: f"/orgs/{v['org']}/holds/{v['id']}",
           arg="id", opts=[HOLD_ORG]),
    Action("create", "Reserve an amount on an organization's wallet (in favour of the "
           "platform's revenue) until it is posted, voided or expires.", "POST",
           lambda v: f"/orgs/{v['org']}/holds",
           opts=[HOLD_ORG, Opt("amount", "Amount in currency units, e.g. 12.50.", required=True),
                 CURRENCY, Opt("ttl", "Seconds until it expires (default 3600, at most 31 "
                                      "days)."),
                 Opt("reason", "Why, e.g. admission (at most 32 characters).", required=True),
                 Opt("cause_type", "What it is for, e.g. instance."),
                 Opt("cause_id", "The id of what it is for."), KEY],
           body=_hold_body),
    Action("post", "Charge all of a hold (no --amount) or part of it; the rest is released.",
           "POST", lambda v: f"/orgs/{v['org']}/holds/{v['id']}/post", arg="id",
           opts=[HOLD_ORG, Opt("amount", "Amount in currency units (default: all of it)."),
                 KEY],
           body=lambda v: _compact({"amount": micros(v["amount"]) if v.get("amount") else None,
                                    "idempotency_key": v["key"]})),
    Action("void", "Release a hold without charging anything.", "POST",
           lambda v: f"/orgs/{v['org']}/holds/{v['id']}/void", arg="id", opts=[HOLD_ORG]),
]), name="holds")
