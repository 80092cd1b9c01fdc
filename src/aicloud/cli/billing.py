"""``aicloud billing``: operator actions on billing (act on the database directly)."""

from __future__ import annotations

from typing import Annotated

import typer

from aicloud.cli.common import ProfileOption, context_or_exit
from aicloud.cli.output import OutputFormat, OutputOption, console, emit, err_console, fail
from aicloud.platform import billing
from aicloud.shared.db import migrate

app = typer.Typer(help="Billing operations (act on the database directly).",
                  no_args_is_help=True)


def _ctx(profile: str | None):  # type: ignore[no-untyped-def]
    ctx = context_or_exit(profile)
    if not migrate.is_up_to_date(ctx.db):
        raise fail("the database schema is not at head; run `aicloud db upgrade` first", 2)
    return ctx


@app.command("rate-once")
def rate_once(
    profile: ProfileOption = None,
    batch_size: Annotated[int, typer.Option(min=1, max=10_000, help="Records per transaction.")]
    = 2000,
    output: OutputOption = OutputFormat.table,
) -> None:
    """Rate every waiting usage record now (what the billing-rater controller does)."""
    ctx = _ctx(profile)
    with err_console.status("rating usage…"):
        n = billing.rate_until_idle(ctx.db, batch_size=batch_size, max_batches=10**9)
    emit({"rated": n}, output)


@app.command("register-meters")
def register_meters(profile: ProfileOption = None,
                    output: OutputOption = OutputFormat.table) -> None:
    """Declare the built-in meters (gpu_seconds, vcpu_seconds, ...); safe to repeat."""
    ctx = _ctx(profile)
    with ctx.db.transaction() as session:
        billing.register_default_meters(session)
        meters = billing.list_meters(session)
    emit(meters, output, columns=["name", "unit", "dimension", "product"])


@app.command("meters")
def meters(profile: ProfileOption = None, output: OutputOption = OutputFormat.table) -> None:
    """List declared meters."""
    ctx = _ctx(profile)
    with ctx.db.transaction() as session:
        found = billing.list_meters(session)
    if not found and output == OutputFormat.table:
        console.print("no meters; run `aicloud billing register-meters`")
        return
    emit(found, output, columns=["name", "unit", "dimension", "product"])
