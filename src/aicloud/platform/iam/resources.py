"""Product resource types a binding may name.

IAM never reads product tables. A product (through the composition root) registers, per
resource type, a function that answers which project one of its resources lives in; IAM uses
it to check that a resource binding (``{type, id}`` on a project) names a resource that exists
and lies in that project. An unregistered type is refused (422), so a binding can never name
"platform", another organization or another project's resource as its "resource".
"""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy.orm import Session

from aicloud.shared.errors import NotFound, ValidationFailed

ProjectOf = Callable[[Session, str], "str | None"]
_RESOURCE_TYPES: dict[str, ProjectOf] = {}


def register_resource_type(resource_type: str, project_of: ProjectOf) -> None:
    """``project_of(session, resource_id)`` returns the resource's project id, or None when
    no such resource exists."""
    _RESOURCE_TYPES[resource_type] = project_of


def resource_types() -> list[str]:
    return sorted(_RESOURCE_TYPES)


def require_resource_in_project(session: Session, resource_type: str, resource_id: str,
                                project_id: str) -> None:
    """The resource exists and belongs to ``project_id`` (404 otherwise: another project's
    resource is as unknown as a missing one); an unknown type is a 422."""
    project_of = _RESOURCE_TYPES.get(resource_type)
    if project_of is None:
        known = ", ".join(resource_types()) or "none"
        raise ValidationFailed(f"unknown resource type {resource_type!r} (known: {known})",
                               field="resource.type")
    if project_of(session, resource_id) != project_id:
        raise NotFound(f"resource {resource_type} {resource_id} not found in {project_id}")
