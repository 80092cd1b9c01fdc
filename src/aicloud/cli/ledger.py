"""``aicloud ledger``: operator checks of the money path (acts on the database directly)."""

from __future__ import annotations

import typer

from aicloud.cli.audit import AgainstOption, read_anchors
from aicloud.cli.common import ProfileOption, context_or_exit
from aicloud.cli.output import OutputFormat, OutputOption, console, emit, err_console, fail
from aicloud.platform import billing
from aicloud.shared.db import migrate

app = typer.Typer(help="Ledger integrity (acts on the database directly).",
                  no_args_is_help=True)


@app.command()
def check(profile: ProfileOption = None, output: OutputOption = OutputFormat.table,
          against: AgainstOption = None) -> None:
    """Recompute every balance from the transfers; exit 1 naming each discrepancy. Without
    --against, an edit whose balance caches were fixed to match cannot be seen."""
    ctx = context_or_exit(profile)
    if not migrate.is_up_to_date(ctx.db):
        raise fail("the database schema is not at head; run `aicloud db upgrade` first", 2)
    published = read_anchors(ctx, against) if against is not None else None
    with err_console.status("recomputing balances from transfers…"), \
            ctx.db.transaction() as session:
        result = billing.check_ledger(session, published=published)
    if output == OutputFormat.json:
        emit(result, output)
    elif result.ok:
        console.print(f"ledger ok: {result.transfers} transfer(s) across {result.accounts} "
                      "account(s); every balance matches, debits equal credits per currency"
                      + (f"; {result.published_checked} published digest(s) in "
                         f"{result.published_sink} match" if published is not None else ""))
    else:
        emit([d.model_dump() for d in result.discrepancies], output,
             columns=["code", "subject", "message"],
             title=f"{len(result.discrepancies)} discrepancy(ies)")
    if not result.ok:
        raise typer.Exit(1)
