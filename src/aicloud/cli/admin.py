"""``aicloud admin``: operator actions on the database directly (work with the API down)."""

from __future__ import annotations

from typing import Annotated

import typer

from aicloud.cli.common import ProfileOption, context_or_exit
from aicloud.cli.output import OutputFormat, OutputOption, console, emit, fail
from aicloud.platform import iam
from aicloud.shared.db import migrate
from aicloud.shared.errors import AppError

app = typer.Typer(help="Operator administration (acts on the database directly).",
                  no_args_is_help=True)


@app.command()
def bootstrap(
    email: Annotated[str, typer.Option(help="Email of the administrator to create.")],
    password: Annotated[str | None, typer.Option(
        help="Password (at least 12 characters); generated and printed once when omitted.")]
    = None,
    profile: ProfileOption = None,
    output: OutputOption = OutputFormat.table,
) -> None:
    """Create an administrator account."""
    ctx = context_or_exit(profile)
    if not migrate.is_up_to_date(ctx.db):
        raise fail("the database schema is not at head; run `aicloud db upgrade` first", 2)
    try:
        with ctx.db.transaction() as session:
            result = iam.bootstrap_admin(session, email=email, password=password)
    except AppError as exc:
        raise fail(exc.detail) from None
    if not result.created:
        raise fail(f"a user with email {result.user.email} already exists")
    if output == OutputFormat.json:
        emit(result, output)
        return
    console.print(f"created administrator [bold]{result.user.email}[/bold] ({result.user.id})")
    if result.password:
        console.print(f"password: [bold]{result.password}[/bold]  (shown once; stored hashed)")
