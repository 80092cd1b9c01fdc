"""A generic builder for tenant resource commands (list, get, create, delete) over the API.

Each resource is described once (paths, options, columns) instead of writing the same
Typer boilerplate for every IAM object; every generated command has ``--help`` and
``--output json`` and turns API errors into one clear line (exit 1).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Annotated, Any

import typer

from aicloud.cli import credentials
from aicloud.cli.auth import api_call
from aicloud.cli.output import OutputFormat, console, emit

Values = dict[str, Any]


@dataclass
class Opt:
    """A command-line option; ``--name-with-dashes`` for ``name_with_dashes``."""

    name: str
    help: str
    required: bool = False
    multiple: bool = False
    flag: str | None = None  # when the flag cannot come from the name (e.g. --from)
    switch: bool = False  # an on/off flag (--platform) instead of an option taking a value


@dataclass
class Action:
    """A command: the options it takes and how to turn them into a request."""

    name: str
    help: str
    method: str
    path: Callable[[Values], str]
    opts: list[Opt] = field(default_factory=list)
    body: Callable[[Values], Any] | None = None
    query: Callable[[Values], dict[str, Any]] | None = None
    paginated: bool = False
    arg: str | None = None  # a positional argument, e.g. "id"
    columns: list[str] | None = None
    # When it returns True the GET answer is text (e.g. --format csv), printed as is.
    raw_text: Callable[[Values], bool] | None = None


def _signature(action: Action) -> inspect.Signature:
    params = []
    if action.arg:
        params.append(inspect.Parameter(
            action.arg, inspect.Parameter.POSITIONAL_OR_KEYWORD,
            annotation=Annotated[str, typer.Argument(help=f"The {action.arg}.")]))
    for o in action.opts:
        kind: Any = list[str] | None if o.multiple else (str if o.required else str | None)
        default: Any = inspect.Parameter.empty if o.required else None
        if o.switch:
            kind, default = bool, False
        params.append(inspect.Parameter(
            o.name, inspect.Parameter.KEYWORD_ONLY, default=default,
            annotation=Annotated[kind, typer.Option(o.flag or "--" + o.name.replace("_", "-"),
                                                    help=o.help)]))
    if action.paginated:
        params.append(inspect.Parameter(
            "limit", inspect.Parameter.KEYWORD_ONLY, default=50,
            annotation=Annotated[int, typer.Option(help="Page size.")]))
        params.append(inspect.Parameter(
            "all_pages", inspect.Parameter.KEYWORD_ONLY, default=False,
            annotation=Annotated[bool, typer.Option("--all", help="Follow every page.")]))
    params.append(inspect.Parameter(
        "output", inspect.Parameter.KEYWORD_ONLY, default=OutputFormat.table,
        annotation=Annotated[OutputFormat, typer.Option("--output", "-o",
                                                        help="Output format.",
                                                        case_sensitive=False)]))
    return inspect.Signature(params)


def _command(action: Action) -> Callable[..., None]:
    def run(**values: Any) -> None:
        output = values.pop("output")
        with credentials.client() as c:
            path = action.path(values)
            if action.paginated:
                query = {k: v for k, v in (action.query(values) if action.query else {}).items()
                         if v is not None}
                if values.get("all_pages"):
                    result: Any = api_call(lambda: list(c.iterate(path, **query,
                                                                  limit=values["limit"])))
                else:
                    page = api_call(lambda: c.get(path, **query, limit=values["limit"]))
                    result = page["items"]
                    if page.get("next_cursor") and output == OutputFormat.table:
                        console.print("[dim]more results: use --all[/dim]")
            elif action.method == "GET" and action.raw_text and action.raw_text(values):
                query = action.query(values) if action.query else {}
                typer.echo(api_call(lambda: c.get_text(path, **query)), nl=False)
                return
            elif action.method == "GET":
                query = action.query(values) if action.query else {}
                result = api_call(lambda: c.get(path, **query))
            else:
                body = action.body(values) if action.body else None
                result = api_call(lambda: c.request(action.method, path, json=body))
        if result is None:
            if output == OutputFormat.json:
                emit({"ok": True}, output)
            else:
                console.print(f"{action.name}: done")
            return
        emit(result, output, columns=action.columns if isinstance(result, list) else None)

    run.__signature__ = _signature(action)  # type: ignore[attr-defined]
    run.__doc__ = action.help
    run.__name__ = action.name.replace("-", "_")
    return run


def add_actions(app: typer.Typer, actions: list[Action]) -> typer.Typer:
    """Add API commands to an existing group (one that also holds other commands)."""
    for action in actions:
        app.command(name=action.name, help=action.help)(_command(action))
    return app


def resource_app(help_text: str, actions: list[Action]) -> typer.Typer:
    return add_actions(typer.Typer(help=help_text, no_args_is_help=True), actions)


def crud(*, plural: str, path: str, columns: list[str], list_path: Callable[[Values], str],
         list_opts: list[Opt] | None = None,
         list_query: Callable[[Values], dict[str, Any]] | None = None,
         create: Action | None = None, get: bool = True, delete: bool = True,
         paginated: bool = True, extra: list[Action] | None = None) -> typer.Typer:
    """The usual four commands for a resource at ``{path}/{id}``, plus extras."""
    actions = [Action("list", f"List {plural} you may see.", "GET", list_path,
                      opts=list_opts or [], query=list_query, paginated=paginated,
                      columns=columns)]
    if get:
        actions.append(Action("get", f"Show one of the {plural}.", "GET",
                              lambda v: f"{path}/{v['id']}", arg="id"))
    if create:
        actions.append(create)
    if delete:
        actions.append(Action("delete", f"Delete (or revoke) one of the {plural}.", "DELETE",
                              lambda v: f"{path}/{v['id']}", arg="id"))
    actions.extend(extra or [])
    return resource_app(f"{plural[0].upper()}{plural[1:]} (through the API).", actions)
