"""``aicloud idle-policy``: stop idle GPU instances (and delete long-stopped ones), per scope
and instance type, through the API."""

from __future__ import annotations

import re

import typer

from aicloud.cli.resource_cmd import Action, Opt, Values, resource_app

_SCOPE = Opt("scope", "Organization, department or project id.", required=True)
_TYPE = Opt("instance_type", "Instance type the policy governs (default: * = every type).",
            flag="--type")
_UNITS = {"m": 1, "h": 60, "d": 1440}
_DURATION = re.compile(r"^(\d+)([mhd])$")


def _minutes(value: str, option: str) -> int:
    """'30m', '2h', '1d' -> minutes."""
    found = _DURATION.match(value.strip())
    if not found:
        raise typer.BadParameter(f"{value!r}: use a number and m, h or d (e.g. 30m, 2h, 7d)",
                                 param_hint=option)
    return int(found.group(1)) * _UNITS[found.group(2)]


def _days(value: str, option: str) -> int:
    minutes = _minutes(value, option)
    if minutes % 1440:
        raise typer.BadParameter(f"{value!r}: whole days (e.g. 7d)", param_hint=option)
    return minutes // 1440


def _path(v: Values) -> str:
    return f"/scopes/{v['scope']}/idle-policies/{v.get('instance_type') or '*'}"


def _body(v: Values) -> dict[str, object]:
    try:
        below = float(v["below"].rstrip("%"))
    except ValueError:
        raise typer.BadParameter(f"{v['below']!r}: a percentage, e.g. 5",
                                 param_hint="--below") from None
    body: dict[str, object] = {"threshold_pct": below,
                               "idle_minutes": _minutes(v["idle_for"], "--for")}
    if v.get("warn"):
        body["warn_minutes"] = _minutes(v["warn"], "--warn")
    if v.get("delete_after"):
        body["delete_after_days"] = _days(v["delete_after"], "--delete-after")
    return body


idle_policy = resource_app(
    "Idle policies: GPU utilization below X% for N minutes -> stop (after a warning); "
    "stopped for D days -> delete. Every policy on an instance's path applies; instances "
    "whose launcher holds policy.idle.exempt on them are spared.", [
        Action("show", "The idle policies that apply at a scope (its own and those above).",
               "GET", lambda v: f"/scopes/{v['scope']}/idle-policies", opts=[_SCOPE],
               columns=["scope_path", "instance_type", "threshold_pct", "idle_minutes",
                        "warn_minutes", "delete_after_days"]),
        Action("set", "Create or change the scope's policy for an instance type "
               "(e.g. --below 5 --for 30m --delete-after 7d).", "PUT", _path,
               opts=[_SCOPE, _TYPE,
                     Opt("below", "GPU utilization (%) under which an instance is idle.",
                         required=True),
                     Opt("idle_for", "Idle this long, then stop: 30m, 2h...", required=True,
                         flag="--for"),
                     Opt("warn", "Warn this long before acting (default 5m)."),
                     Opt("delete_after", "Delete instances stopped this long: 7d "
                         "(default: never).")],
               body=_body),
        Action("delete", "Remove the scope's policy for an instance type.", "DELETE", _path,
               opts=[_SCOPE, _TYPE]),
    ])

COMMANDS = [("idle-policy", idle_policy)]
