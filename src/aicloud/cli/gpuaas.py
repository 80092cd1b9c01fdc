"""``aicloud instances`` and ``aicloud nodes``: GPUaaS through the REST API."""

from __future__ import annotations

import sys
import time
from typing import Annotated, Any

import typer

from aicloud.cli import credentials
from aicloud.cli.auth import api_call
from aicloud.cli.output import OutputFormat, console, emit
from aicloud.cli.resource_cmd import Action, Opt, resource_app

OutputOpt = Annotated[OutputFormat, typer.Option("--output", "-o", help="Output format.",
                                                 case_sensitive=False)]
INSTANCE_COLUMNS = ["id", "name", "instance_type", "template", "state", "queue_position",
                    "node_id", "endpoint_url"]


def _instance_summary(inst: dict[str, Any]) -> dict[str, Any]:
    """``get`` in a table: the state with the reason of its last step, the queue position."""
    last = inst["transitions"][-1] if inst.get("transitions") else None
    shown = {k: v for k, v in inst.items() if k != "transitions"}
    if last is not None:
        shown["last_transition"] = f"{last['from_state']} -> {last['to_state']} at " \
                                   f"{last['at']}: {last['reason']}"
    return shown


instances = typer.Typer(help="GPU instances (through the API).", no_args_is_help=True)


@instances.command("launch")
def launch(
    project: Annotated[str, typer.Option(help="Project id to launch in.")],
    instance_type: Annotated[str, typer.Option("--type", help="Instance type, e.g. "
                                                              "gpu.h100.1x.")],
    name: Annotated[str, typer.Option(help="A name for the instance.")] = "instance",
    template: Annotated[str, typer.Option(help="shell, web-app, api-app or batch.")] = "shell",
    command: Annotated[list[str] | None, typer.Option(
        help="batch: the command (repeat for each argument).")] = None,
    priority: Annotated[int, typer.Option(help="Higher is placed first (-100..100).")] = 0,
    idempotency_key: Annotated[str | None, typer.Option(
        help="Retry-safe key: the same key launches at most once.")] = None,
    output: OutputOpt = OutputFormat.table,
) -> None:
    """Launch an instance; admission refusals say which limit and by how much."""
    body = {"name": name, "instance_type": instance_type, "template": template,
            "command": command or None, "priority": priority}
    with credentials.client() as c:
        result = api_call(lambda: c.post(f"/projects/{project}/instances", body,
                                         idempotency_key=idempotency_key))
    emit(_instance_summary(result), output)


@instances.command("list")
def list_instances(
    project: Annotated[str, typer.Option(help="Project id.")],
    limit: Annotated[int, typer.Option(help="Page size.")] = 50,
    output: OutputOpt = OutputFormat.table,
) -> None:
    """The instances of a project."""
    with credentials.client() as c:
        items = api_call(lambda: list(c.iterate(f"/projects/{project}/instances",
                                                limit=limit)))
    emit(items, output, columns=INSTANCE_COLUMNS)


@instances.command("get")
def get_instance(instance_id: Annotated[str, typer.Argument(help="The instance id.")],
                 output: OutputOpt = OutputFormat.table) -> None:
    """State and the reason of its last step, queue position while waiting, endpoint."""
    with credentials.client() as c:
        result = api_call(lambda: c.get(f"/instances/{instance_id}"))
    emit(result if output == OutputFormat.json else _instance_summary(result), output)


@instances.command("stop")
def stop_instance(instance_id: Annotated[str, typer.Argument(help="The instance id.")],
                  reason: Annotated[str, typer.Option(help="Recorded and shown.")] =
                  "stopped by user",
                  output: OutputOpt = OutputFormat.table) -> None:
    """Cancel a waiting instance, or ask its node to stop it."""
    with credentials.client() as c:
        result = api_call(lambda: c.post(f"/instances/{instance_id}/stop",
                                         {"reason": reason}))
    emit(_instance_summary(result), output)


@instances.command("logs")
def logs(instance_id: Annotated[str, typer.Argument(help="The instance id.")],
         follow: Annotated[bool, typer.Option("--follow", "-f",
                                              help="Keep printing until it ends.")] = False,
         tail: Annotated[int | None, typer.Option(help="Start with the last N lines.")] = None,
         output: OutputOpt = OutputFormat.table) -> None:
    """The workload's output (stdout and stderr)."""
    with credentials.client() as c:
        chunk = api_call(lambda: c.get(f"/instances/{instance_id}/logs", tail_lines=tail))
        if output == OutputFormat.json and not follow:
            emit(chunk, output)
            return
        while True:
            sys.stdout.write(chunk["data"])
            sys.stdout.flush()
            if not follow or chunk["complete"]:
                return
            time.sleep(0.5)
            chunk = api_call(lambda at=chunk["next_offset"]: c.get(
                f"/instances/{instance_id}/logs", offset=at))


NODE_COLUMNS = ["id", "name", "state", "state_reason", "inventory_source", "simulated",
                "gpus"]


def _node_rows(nodes: list[dict[str, Any]]) -> list[dict[str, Any]]:
    rows = []
    for n in nodes:
        healthy = sum(1 for g in n["gpus"] if g["healthy"])
        used = sum(1 for g in n["gpus"] if g["instance_id"])
        models = sorted({g["model"] for g in n["gpus"]})
        rows.append({**n, "gpus": f"{len(n['gpus'])} {'/'.join(models)} ({used} used, "
                                  f"{len(n['gpus']) - healthy} unhealthy)"
                                  + (" SIMULATED" if n["simulated"] else "")})
    return rows


nodes_actions = [
    Action("cordon", "No new placements on the node (platform operators).", "POST",
           lambda v: f"/nodes/{v['id']}/cordon", arg="id", opts=[Opt("reason", "Why.")],
           body=lambda v: {"reason": v.get("reason") or ""}),
    Action("drain", "Cordon, then stop running instances after --grace-seconds.", "POST",
           lambda v: f"/nodes/{v['id']}/drain", arg="id",
           opts=[Opt("grace_seconds", "How long instances may finish (default 300)."),
                 Opt("reason", "Why.")],
           body=lambda v: {"grace_seconds": int(v.get("grace_seconds") or 300),
                           "reason": v.get("reason") or ""}),
    Action("uncordon", "Make the node ready for placements again.", "POST",
           lambda v: f"/nodes/{v['id']}/uncordon", arg="id",
           body=lambda v: {}),
    Action("revoke", "Revoke the node's credential: cordoned at once, its agent is "
           "disconnected and refused until the host joins again.", "POST",
           lambda v: f"/nodes/{v['id']}/revoke", arg="id", opts=[Opt("reason", "Why.")],
           body=lambda v: {"reason": v.get("reason") or ""}),
    Action("join-tokens", "Join tokens (never their secrets), newest first.", "GET",
           lambda v: "/nodes/join-tokens",
           columns=["id", "description", "uses", "max_uses", "expires_at", "revoked_at"]),
    Action("revoke-join-token", "No more joins with this token.", "POST",
           lambda v: f"/nodes/join-tokens/{v['id']}/revoke", arg="id", body=lambda v: {}),
]
nodes = resource_app("GPU nodes (through the API; platform operators).", nodes_actions)


@nodes.command("list")
def list_nodes(output: OutputOpt = OutputFormat.table) -> None:
    """Nodes, their state and GPUs; simulated inventories are labelled SIMULATED."""
    with credentials.client() as c:
        result = api_call(lambda: c.get("/nodes"))
    if output == OutputFormat.json:
        emit(result, output)
    else:
        emit(_node_rows(result), output, columns=NODE_COLUMNS)
        if any(n["simulated"] for n in result):
            console.print("[yellow]simulated GPUs come from the profile's static inventory, "
                          "not from hardware[/yellow]")


_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> int:
    """``90s``, ``30m``, ``1h``, ``7d`` (or plain seconds) -> seconds."""
    value = text.strip().lower()
    unit = _UNITS.get(value[-1:])
    number = value[:-1] if unit else value
    if not number.isdigit() or int(number) <= 0:
        raise typer.BadParameter(f"{text!r}: use a positive duration such as 30m, 1h or 7d")
    return int(number) * (unit or 1)


@nodes.command("join-token")
def join_token(
    expires: Annotated[str, typer.Option(help="How long it may be used: 30m, 1h, 7d "
                                              "(1 minute .. 30 days).")] = "1h",
    uses: Annotated[int, typer.Option(help="How many hosts may join with it.")] = 1,
    description: Annotated[str, typer.Option(help="What it is for.")] = "",
    output: OutputOpt = OutputFormat.table,
) -> None:
    """Create a node join token (platform operators). Shown once: run
    `aicloud agent --url URL --token TOKEN` on the new host."""
    body = {"expires_in_seconds": parse_duration(expires), "uses": uses,
            "description": description}
    with credentials.client() as c:
        result = api_call(lambda: c.post("/nodes/join-tokens", body))
    if output == OutputFormat.json:
        emit(result, output)
        return
    emit({k: v for k, v in result.items() if k != "token"}, output)
    console.print(f"token: [bold]{result['token']}[/bold]\n"
                  "Shown once; only a digest is stored. On the new host: "
                  f"aicloud agent --url {c.base_url} --token <token>")


COMMANDS = [("instances", instances), ("nodes", nodes)]
