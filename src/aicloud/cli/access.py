"""``aicloud endpoints``: API endpoints of a project and their keys, through the REST API."""

from __future__ import annotations

from typing import Annotated

import typer

from aicloud.cli import credentials
from aicloud.cli.auth import api_call
from aicloud.cli.output import OutputFormat, console, emit

OutputOpt = Annotated[OutputFormat, typer.Option("--output", "-o", help="Output format.",
                                                 case_sensitive=False)]
ENDPOINT_COLUMNS = ["id", "name", "path", "resource_id", "created_by", "created_at"]
KEY_COLUMNS = ["id", "name", "rate_limit_requests", "rate_limit_window_seconds",
               "created_at", "revoked_at"]

endpoints = typer.Typer(help="API endpoints: publish an api-app instance at "
                             "/endpoints/{name}/ and manage its keys.", no_args_is_help=True)
keys = typer.Typer(help="Keys of an API endpoint.", no_args_is_help=True)
endpoints.add_typer(keys, name="keys")


@endpoints.command("publish")
def publish(project: Annotated[str, typer.Option(help="Project id.")],
            name: Annotated[str, typer.Option(help="Unique name: the URL is "
                                                   "/endpoints/NAME/.")],
            instance: Annotated[str, typer.Option(help="The api-app instance to publish.")],
            output: OutputOpt = OutputFormat.table) -> None:
    """Publish an api-app instance of the project."""
    with credentials.client() as c:
        result = api_call(lambda: c.post(f"/projects/{project}/endpoints",
                                         {"name": name, "resource_id": instance}))
    emit(result, output)


@endpoints.command("list")
def list_endpoints(project: Annotated[str, typer.Option(help="Project id.")],
                   output: OutputOpt = OutputFormat.table) -> None:
    """The project's endpoints."""
    with credentials.client() as c:
        items = api_call(lambda: list(c.iterate(f"/projects/{project}/endpoints")))
    emit(items, output, columns=ENDPOINT_COLUMNS)


@endpoints.command("unpublish")
def unpublish(endpoint_id: Annotated[str, typer.Argument(help="The endpoint id.")]) -> None:
    """Stop serving the endpoint; its keys go with it."""
    with credentials.client() as c:
        api_call(lambda: c.delete(f"/api-endpoints/{endpoint_id}"))
    console.print(f"unpublished {endpoint_id}")


@keys.command("create")
def create_key(endpoint_id: Annotated[str, typer.Argument(help="The endpoint id.")],
               name: Annotated[str, typer.Option(help="A name for the key.")] = "key",
               limit: Annotated[int, typer.Option(help="Requests at once (the bucket), "
                                                       "refilled per --window.")] = 600,
               window: Annotated[int, typer.Option(help="Refill window, seconds.")] = 60,
               output: OutputOpt = OutputFormat.table) -> None:
    """A key of the endpoint. The secret is printed once; only its hash is stored."""
    with credentials.client() as c:
        result = api_call(lambda: c.post(f"/api-endpoints/{endpoint_id}/keys", {
            "name": name, "rate_limit_requests": limit,
            "rate_limit_window_seconds": window}))
    emit(result, output)
    if output != OutputFormat.json:
        console.print("[yellow]the secret is shown once: store it now[/yellow]")


@keys.command("list")
def list_keys(endpoint_id: Annotated[str, typer.Argument(help="The endpoint id.")],
              output: OutputOpt = OutputFormat.table) -> None:
    """The endpoint's keys (never their secrets)."""
    with credentials.client() as c:
        items = api_call(lambda: list(c.iterate(f"/api-endpoints/{endpoint_id}/keys")))
    emit(items, output, columns=KEY_COLUMNS)


@keys.command("revoke")
def revoke_key(key_id: Annotated[str, typer.Argument(help="The key id.")],
               output: OutputOpt = OutputFormat.table) -> None:
    """Revoke a key: refused from now on."""
    with credentials.client() as c:
        result = api_call(lambda: c.post(f"/endpoint-keys/{key_id}/revoke", {}))
    emit(result, output)


COMMANDS = [("endpoints", endpoints)]
