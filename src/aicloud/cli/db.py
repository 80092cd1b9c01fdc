"""``aicloud db``: schema migrations (works with the API down)."""

from __future__ import annotations

from typing import Annotated

import typer

from aicloud.cli.common import ProfileOption, context_or_exit
from aicloud.cli.output import OutputFormat, OutputOption, console, emit, err_console
from aicloud.shared.config import mask_url_password
from aicloud.shared.db import migrate

app = typer.Typer(help="Database schema migrations.", no_args_is_help=True)


@app.command()
def upgrade(
    profile: ProfileOption = None,
    revision: Annotated[str, typer.Option(help="Target revision; default every branch head.")]
    = "heads",
) -> None:
    """Apply migrations up to REVISION (default: all heads)."""
    ctx = context_or_exit(profile)
    before = migrate.current_revisions(ctx.db)
    with err_console.status("migrating…"):
        migrate.upgrade(ctx.db, revision)
    after = migrate.current_revisions(ctx.db)
    word = "already at" if before == after else "now at"
    console.print(f"{mask_url_password(ctx.db.url)}: {word} {', '.join(after) or 'base'}")


@app.command()
def downgrade(
    revision: Annotated[str, typer.Argument(help="Target revision, e.g. base or iam_0001.")],
    profile: ProfileOption = None,
) -> None:
    """Revert migrations down to REVISION."""
    ctx = context_or_exit(profile)
    migrate.downgrade(ctx.db, revision)
    console.print(f"now at {', '.join(migrate.current_revisions(ctx.db)) or 'base'}")


@app.command()
def current(profile: ProfileOption = None, output: OutputOption = OutputFormat.table) -> None:
    """Show the database's revisions and whether it is at head."""
    ctx = context_or_exit(profile)
    cur = migrate.current_revisions(ctx.db)
    heads = migrate.head_revisions()
    emit({"database": mask_url_password(ctx.db.url), "current": cur, "heads": heads,
          "up_to_date": cur == heads}, output)
