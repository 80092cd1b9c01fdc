"""Tenant IAM commands: organizations, departments, projects, users, groups, service
accounts, API keys, roles, bindings, deny bindings, invitations, and ``iam explain``.

All of them are clients of the REST API (built with ``resource_cmd``).
"""

from __future__ import annotations

from typing import Annotated, Any

import typer

from aicloud.cli import credentials
from aicloud.cli.auth import api_call
from aicloud.cli.output import OutputFormat, OutputOption, emit, fail
from aicloud.cli.resource_cmd import Action, Opt, Values, crud


def _one_of(v: Values, *names: str) -> tuple[str, str]:
    given = [(n, v[n]) for n in names if v.get(n)]
    if len(given) != 1:
        raise fail("give exactly one of " + ", ".join("--" + n.replace("_", "-")
                                                      for n in names), 2)
    return given[0]


def _owner_path(v: Values, suffix: str) -> str:
    name, value = _one_of(v, "org", "department", "project")
    base = {"org": "orgs", "department": "departments", "project": "projects"}[name]
    return f"/{base}/{value}/{suffix}"


def _resource(v: Values) -> dict[str, str] | None:
    if v.get("resource_id"):
        return {"type": v.get("resource_type") or "resource", "id": v["resource_id"]}
    return None


NAME = Opt("name", "Name.", required=True)

orgs = crud(
    plural="organizations", path="/orgs", columns=["id", "name", "created_at"],
    list_path=lambda v: "/orgs",
    create=Action("create", "Create an organization (platform administrators).", "POST",
                  lambda v: "/orgs", opts=[NAME], body=lambda v: {"name": v["name"]}),
)

departments = crud(
    plural="departments", path="/departments", columns=["id", "org_id", "name"],
    list_path=lambda v: f"/orgs/{v['org']}/departments",
    list_opts=[Opt("org", "Organization id.", required=True)],
    create=Action("create", "Create a department in an organization.", "POST",
                  lambda v: f"/orgs/{v['org']}/departments",
                  opts=[Opt("org", "Organization id.", required=True), NAME],
                  body=lambda v: {"name": v["name"]}),
)

projects = crud(
    plural="projects", path="/projects",
    columns=["id", "name", "org_id", "department_id", "scope_path"],
    list_path=lambda v: "/projects",
    list_opts=[Opt("org", "Only this organization."),
               Opt("department", "Only this department.")],
    list_query=lambda v: {"org_id": v.get("org"), "department_id": v.get("department")},
    create=Action("create", "Create a project in a department or directly in an organization.",
                  "POST", lambda v: _owner_path({**v, "project": None}, "projects"),
                  opts=[Opt("org", "Organization id (project directly under it)."),
                        Opt("department", "Department id."), NAME],
                  body=lambda v: {"name": v["name"]}),
    extra=[Action("move", "Move a project to another department (or, without --department, "
                  "directly under its organization).", "POST",
                  lambda v: f"/projects/{v['id']}/move", arg="id",
                  opts=[Opt("department", "Destination department id.")],
                  body=lambda v: {"department_id": v.get("department")})],
)

users = crud(
    plural="users", path="/users", columns=["id", "email", "display_name", "disabled"],
    list_path=lambda v: "/users", delete=False,
    create=Action("create", "Create a user (platform administrators).", "POST",
                  lambda v: "/users",
                  opts=[Opt("email", "Email address.", required=True),
                        Opt("display_name", "Display name."),
                        Opt("password", "Password (at least 12 characters).")],
                  body=lambda v: {"email": v["email"], "display_name": v.get("display_name"),
                                  "password": v.get("password")}),
    extra=[Action("disable", "Disable a user and revoke all their sessions and API keys "
                  "(platform administrators; never the last one).", "PATCH",
                  lambda v: f"/users/{v['id']}", arg="id", body=lambda v: {"disabled": True}),
           Action("enable", "Enable a disabled user (old sessions and keys stay revoked).",
                  "PATCH",
                  lambda v: f"/users/{v['id']}", arg="id", body=lambda v: {"disabled": False})],
)

groups = crud(
    plural="groups", path="/groups", columns=["id", "org_id", "name"],
    list_path=lambda v: f"/orgs/{v['org']}/groups",
    list_opts=[Opt("org", "Organization id.", required=True)],
    create=Action("create", "Create a group of users in an organization.", "POST",
                  lambda v: f"/orgs/{v['org']}/groups",
                  opts=[Opt("org", "Organization id.", required=True), NAME],
                  body=lambda v: {"name": v["name"]}),
    extra=[Action("members", "List a group's members.", "GET",
                  lambda v: f"/groups/{v['id']}/members", arg="id"),
           Action("add-member", "Add a user to a group.", "PUT",
                  lambda v: f"/groups/{v['id']}/members/{v['user']}", arg="id",
                  opts=[Opt("user", "User id.", required=True)]),
           Action("remove-member", "Remove a user from a group.", "DELETE",
                  lambda v: f"/groups/{v['id']}/members/{v['user']}", arg="id",
                  opts=[Opt("user", "User id.", required=True)])],
)

def _service_account_path(v: Values) -> str:
    if [bool(v.get("org")), bool(v.get("project")), bool(v.get("platform"))].count(True) != 1:
        raise fail("give exactly one of --org, --project, --platform", 2)
    if v.get("platform"):
        return "/service-accounts"
    return _owner_path({**v, "department": None}, "service-accounts")


service_accounts = crud(
    plural="service accounts", path="/service-accounts",
    columns=["id", "name", "org_id", "project_id", "disabled"],
    list_path=lambda v: "/service-accounts",
    create=Action("create", "Create a service account owned by an organization, a project "
                  "or (--platform, platform admins) the platform, e.g. a product's account.",
                  "POST", _service_account_path,
                  opts=[Opt("org", "Owning organization id."),
                        Opt("project", "Owning project id."),
                        Opt("platform", "Owned by the platform (bind it at scope platform).",
                            switch=True), NAME],
                  body=lambda v: {"name": v["name"]}),
    extra=[Action("disable", "Disable a service account (its keys stop working).", "PATCH",
                  lambda v: f"/service-accounts/{v['id']}", arg="id",
                  body=lambda v: {"disabled": True}),
           Action("enable", "Re-enable a service account (its keys work again; you must "
                  "hold its bindings).", "PATCH",
                  lambda v: f"/service-accounts/{v['id']}", arg="id",
                  body=lambda v: {"disabled": False})],
)


def _key_path(v: Values) -> str:
    sa = v.get("service_account")
    return f"/service-accounts/{sa}/api-keys" if sa else "/api-keys"


api_keys = crud(
    plural="API keys", path="/api-keys",
    columns=["id", "name", "principal_id", "scope_id", "expires_at", "last_used_at",
             "revoked_at"],
    list_path=lambda v: "/api-keys",
    create=Action("create", "Create an API key for yourself or a service account; the secret "
                  "is printed once.", "POST", _key_path,
                  opts=[NAME, Opt("service_account", "Service account id (default: you)."),
                        Opt("scope", "Narrow the key to this scope id."),
                        Opt("permission", "Narrow the key to these permissions (repeat).",
                            multiple=True),
                        Opt("expires_at", "Expiry, ISO 8601 with time zone.")],
                  body=lambda v: {"name": v["name"], "scope_id": v.get("scope"),
                                  "permissions": v.get("permission") or None,
                                  "expires_at": v.get("expires_at")}),
)

roles = crud(
    plural="roles", path="/roles", columns=["id", "name", "org_id", "builtin", "permissions"],
    list_path=lambda v: "/roles", paginated=False,
    create=Action("create", "Define a custom role of an organization.", "POST",
                  lambda v: f"/orgs/{v['org']}/roles",
                  opts=[Opt("org", "Organization id.", required=True), NAME,
                        Opt("permission", "A permission or pattern such as gpuaas.* (repeat).",
                            required=True, multiple=True),
                        Opt("description", "What the role is for.")],
                  body=lambda v: {"name": v["name"], "permissions": v["permission"],
                                  "description": v.get("description") or ""}),
)

SCOPE = Opt("scope", "Scope id: platform, an organization, department or project.",
            required=True)
RESOURCE = [Opt("resource_type", "Type of the resource (with --resource-id)."),
            Opt("resource_id", "Bind on this resource of the project given as --scope.")]

bindings = crud(
    plural="role bindings", path="/bindings",
    columns=["id", "principal_id", "role_id", "scope_id", "resource_type"],
    list_path=lambda v: f"/scopes/{v['scope']}/bindings", list_opts=[SCOPE],
    create=Action("create", "Grant a role to a user, service account or group at a scope.",
                  "POST", lambda v: f"/scopes/{v['scope']}/bindings",
                  opts=[SCOPE, Opt("principal", "User, service account or group id.",
                                   required=True),
                        Opt("role", "Role id (built-in name or role_...).", required=True),
                        *RESOURCE],
                  body=lambda v: {"principal_id": v["principal"], "role_id": v["role"],
                                  "resource": _resource(v)}),
)

deny_bindings = crud(
    plural="deny bindings", path="/deny-bindings",
    columns=["id", "principal_id", "permission", "scope_id", "resource_type"],
    list_path=lambda v: f"/scopes/{v['scope']}/deny-bindings", list_opts=[SCOPE],
    create=Action("create", "Deny permissions matching a pattern at a scope and below.",
                  "POST", lambda v: f"/scopes/{v['scope']}/deny-bindings",
                  opts=[SCOPE, Opt("principal", "User, service account or group id.",
                                   required=True),
                        Opt("permission", "Permission or pattern.", required=True), *RESOURCE],
                  body=lambda v: {"principal_id": v["principal"],
                                  "permission": v["permission"], "resource": _resource(v)}),
)

invitations = crud(
    plural="invitations", path="/invitations", get=False,
    columns=["id", "email", "role_id", "scope_id", "expires_at", "accepted_at"],
    list_path=lambda v: f"/scopes/{v['scope']}/invitations", list_opts=[SCOPE],
    create=Action("create", "Invite an email with a role at a scope; prints the token once.",
                  "POST", lambda v: f"/scopes/{v['scope']}/invitations",
                  opts=[SCOPE, Opt("email", "Invitee's email.", required=True),
                        Opt("role", "Role id.", required=True)],
                  body=lambda v: {"email": v["email"], "role_id": v["role"]}),
    extra=[Action("accept", "Accept an invitation (creates your account if needed).", "POST",
                  lambda v: "/invitations/accept",
                  opts=[Opt("token", "Invitation token.", required=True),
                        Opt("password", "Your (new or existing) password.", required=True),
                        Opt("display_name", "Display name for a new account.")],
                  body=lambda v: {"token": v["token"], "password": v["password"],
                                  "display_name": v.get("display_name")})],
)

iam_app = typer.Typer(help="Questions about access.", no_args_is_help=True)


@iam_app.command()
def explain(
    principal: Annotated[str, typer.Option(help="User or service account id.")],
    permission: Annotated[str, typer.Option(help="Permission, e.g. gpuaas.instances.create.")],
    resource: Annotated[str, typer.Option(
        help="Scope id (platform, org, department, project) or PROJECT/TYPE/ID for one "
             "resource of a project.")],
    output: OutputOption = OutputFormat.table,
) -> None:
    """Why can (or can't) PRINCIPAL use PERMISSION on RESOURCE."""
    params: dict[str, Any] = {"principal_id": principal, "permission": permission}
    parts = resource.split("/")
    if len(parts) == 3:
        params.update(scope_id=parts[0], resource_type=parts[1], resource_id=parts[2])
    elif len(parts) == 1:
        params["scope_id"] = resource
    else:
        raise fail("--resource is a scope id or PROJECT/TYPE/ID", 2)
    with credentials.client() as c:
        decision = api_call(lambda: c.get("/iam/explain", **params))
    emit(decision, output)


@iam_app.command()
def permissions(output: OutputOption = OutputFormat.table) -> None:
    """List every declared permission."""
    with credentials.client() as c:
        result = api_call(lambda: c.get("/permissions"))
    emit(result, output, columns=["name", "description"])


COMMANDS: list[tuple[str, typer.Typer]] = [
    ("orgs", orgs), ("departments", departments), ("projects", projects), ("users", users),
    ("groups", groups), ("service-accounts", service_accounts), ("api-keys", api_keys),
    ("roles", roles), ("bindings", bindings), ("deny-bindings", deny_bindings),
    ("invitations", invitations), ("iam", iam_app),
]
