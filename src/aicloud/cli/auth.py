"""``login``, ``logout``, ``whoami``: tenant-facing, through the REST API."""

from __future__ import annotations

from typing import Annotated

import httpx
import typer

from aicloud.cli import credentials
from aicloud.cli.output import OutputFormat, OutputOption, console, emit, fail
from aicloud.sdk.client import ApiClient, ApiError


def api_call(fn):  # type: ignore[no-untyped-def]
    """Turn API and connection errors into one clear line and exit 1."""
    try:
        return fn()
    except ApiError as exc:
        rid = f" (request id {exc.request_id})" if exc.request_id else ""
        raise fail(f"{exc}{rid}") from None
    except httpx.HTTPError as exc:
        raise fail(f"cannot reach the API: {exc}") from None


def login(
    url: Annotated[str | None, typer.Option(help="API URL, e.g. http://127.0.0.1:8080.")] = None,
    email: Annotated[str | None, typer.Option(help="Account email.")] = None,
    password: Annotated[str | None, typer.Option(
        help="Password; prompted for (hidden) when omitted. Prefer the prompt.")] = None,
    output: OutputOption = OutputFormat.table,
) -> None:
    """Log in and store a session token under your config directory."""
    url = url or credentials.load().url
    email = email or typer.prompt("email")
    password = password or typer.prompt("password", hide_input=True)
    with ApiClient(url) as c:
        result = api_call(lambda: c.post("/auth/login", {"email": email, "password": password}))
    path = credentials.save(credentials.Credentials(url=url, token=result["token"], email=email))
    if output == OutputFormat.json:
        emit({"url": url, "user": result["user"], "expires_at": result["expires_at"],
              "credentials": str(path)}, output)
    else:
        console.print(f"logged in to {url} as [bold]{result['user']['email']}[/bold]; "
                      f"token stored in {path}")


def logout() -> None:
    """Revoke the stored session and forget it."""
    creds = credentials.load()
    if creds.token:
        with ApiClient(creds.url, creds.token) as c:
            try:
                c.post("/auth/logout")
            except (ApiError, httpx.HTTPError):
                pass  # forgetting the local token is what matters
    credentials.forget()
    console.print("logged out")


def whoami(output: OutputOption = OutputFormat.table) -> None:
    """Show the account the stored token belongs to."""
    with credentials.client() as c:
        me = api_call(lambda: c.get("/auth/me"))
    emit(me, output)
