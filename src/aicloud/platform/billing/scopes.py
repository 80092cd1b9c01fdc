"""Scope paths ("/org_x/dep_y/prj_z") as billing receives them from callers.

A path is only a claim: ``/<org B>/<project of org A>`` is well formed, and so is a path
naming an organization that does not exist. Wherever billing takes a path it checks it
against IAM's hierarchy (``resolve_scope``): the last id must exist and IAM must place it at
exactly this path. Otherwise usage would charge one tenant for another's project, and a
wallet, budget or price list could be made for an organization nobody owns.
"""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import ColumnElement, or_
from sqlalchemy.orm import Session

from aicloud.platform import iam
from aicloud.shared.errors import NotFound, ValidationFailed


def split_scope(scope_path: str, field: str = "scope_path") -> list[str]:
    parts = scope_path.split("/")
    if not scope_path.startswith("/") or len(parts) < 2 or not all(parts[1:]):
        raise ValidationFailed(f"{field} must look like /org/dep/prj, got {scope_path!r}",
                               field=field)
    return parts[1:]


def org_of(scope_path: str) -> str:
    return split_scope(scope_path)[0]


def at_or_below(column: ColumnElement[str], scope_path: str) -> ColumnElement[bool]:
    """``column`` names ``scope_path`` or a scope under it. Not a bare ``LIKE path%``: that
    also matched ``/org_ab`` for ``/org_a``, and ``_`` is a LIKE wildcard."""
    split_scope(scope_path)
    path = scope_path.rstrip("/")
    escaped = path.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return or_(column == path, column.like(escaped + "/%", escape="\\"))


def resolve_scope(session: Session, scope_path: str, field: str = "scope_path") -> list[str]:
    """The ids of ``scope_path`` after checking that IAM has its last scope at exactly this
    path (an organization, department or project that exists, nested as written)."""
    parts = split_scope(scope_path, field)
    if len(parts) > 3:
        raise ValidationFailed(f"{field} names an organization, department or project, got "
                               f"{scope_path!r}", field=field)
    try:
        actual = iam.scope_path(session, parts[-1])
    except NotFound:
        raise ValidationFailed(f"{field} {scope_path!r}: {parts[-1]} does not exist",
                               field=field) from None
    if actual != scope_path:
        raise ValidationFailed(f"{field} {scope_path!r} is not where {parts[-1]} is "
                               f"({actual})", field=field)
    return parts


def resolve_scopes(session: Session, scope_paths: Iterable[str],
                   field: str = "scope_path") -> None:
    """resolve_scope for many paths (a usage batch): each distinct path is checked once, and
    the projects they end in are read in one query (a batch's projects are its usual paths;
    a look-up each cost a tenth of ingesting a 1,000-record batch)."""
    paths = sorted(set(scope_paths))
    by_project: dict[str, str] = {}
    for path in paths:
        parts = split_scope(path, field)
        if len(parts) <= 3 and parts[-1].startswith("prj_"):
            by_project.setdefault(parts[-1], path)
    found = {p.id: p.scope_path for p in iam.list_projects(session, sorted(by_project))}
    for path in paths:
        project = path.rsplit("/", 1)[-1]
        if by_project.get(project) == path and found.get(project) == path:
            continue  # IAM has this project at exactly this path
        resolve_scope(session, path, field)  # anything else: checked, and named, one by one


def check_org(session: Session, org_id: str, field: str = "org_id") -> str:
    """An organization id that exists in IAM (a wallet or contract is never made for one
    that does not)."""
    if not org_id or "/" in org_id:
        raise ValidationFailed("organization id is required", field=field)
    resolve_scope(session, f"/{org_id}", field)
    return org_id
