"""``aicloud quotas``: limits per scope, through the API."""

from __future__ import annotations

from aicloud.cli.resource_cmd import Action, Opt, resource_app

_SCOPE = Opt("scope", "Organization, department or project id.", required=True)
_KEY = Opt("key", "What is limited: gpu (all models) or gpu:<MODEL>, e.g. gpu:H100.",
           required=True)

quotas = resource_app("Quotas per scope, enforced when instances are launched.", [
    Action("list", "Quotas that apply to the scope (its own and those above it).", "GET",
           lambda v: f"/scopes/{v['scope']}/quotas", opts=[_SCOPE],
           columns=["scope_path", "resource_key", "limit"]),
    Action("set", "Set a limit (needs quota rights on the scope above).", "PUT",
           lambda v: f"/scopes/{v['scope']}/quotas/{v['key']}",
           opts=[_SCOPE, _KEY, Opt("limit", "Maximum units in use at once.", required=True)],
           body=lambda v: {"limit": v["limit"]}),
    Action("clear", "Remove a limit.", "DELETE",
           lambda v: f"/scopes/{v['scope']}/quotas/{v['key']}", opts=[_SCOPE, _KEY]),
])

COMMANDS = [("quotas", quotas)]
