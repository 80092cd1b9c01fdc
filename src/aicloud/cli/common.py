"""Loading configuration and the database for operator commands."""

from __future__ import annotations

from typing import Annotated

import typer
from pydantic import ValidationError

from aicloud.cli.output import err_console
from aicloud.runtime import AppContext, build_context
from aicloud.shared.config import PROFILES, ConfigError, Settings, load_settings

ProfileOption = Annotated[
    str | None,
    typer.Option("--profile", "-p", help=f"Profile to use ({', '.join(PROFILES)}); "
                                         "default $AICLOUD_PROFILE or dev."),
]


def settings_or_exit(profile: str | None = None, *, validate: bool = False) -> Settings:
    """Load settings; on any problem print every one of them and exit 2."""
    try:
        settings = load_settings(profile)
        if validate:
            settings.validate_for_start()
        return settings
    except ConfigError as exc:
        err_console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from None
    except ValidationError as exc:
        err_console.print("[red]error:[/red] invalid configuration:")
        for e in exc.errors():
            loc = ".".join(str(x) for x in e["loc"])
            err_console.print(f"  - {loc}: {e['msg']}")
        raise typer.Exit(2) from None


def context_or_exit(profile: str | None = None, *, validate: bool = False) -> AppContext:
    return build_context(settings_or_exit(profile, validate=validate))
