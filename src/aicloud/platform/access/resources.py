"""What access knows of the resources it reaches: only what a product's resolver says.

The composition root registers one resolver per resource id prefix (GPUaaS: ``inst`` ->
its instances). A resolver reads the product's own tables and answers an ``AccessTarget``,
or raises NotFound. Access never imports a product.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from sqlalchemy.orm import Session

from aicloud.platform import iam
from aicloud.platform.access.http1 import StreamTarget
from aicloud.shared.errors import NotFound
from aicloud.shared.ids import id_prefix


@dataclass(frozen=True)
class AccessTarget:
    """One resource as access sees it."""

    resource_type: str        # the IAM resource type, e.g. "instance"
    id: str
    project_id: str
    scope_path: str           # /org/dep/prj
    state: str                # the product's state name, shown in 409s
    running: bool             # serving now: its port may be reached
    node_id: str | None
    endpoint: str | None      # where it serves (http://host:port) as the product recorded it
    kind: str                 # what it is (GPUaaS: its template, e.g. "web-app", "api-app")
    open_permission: str      # what a user must hold on it to open its browser app

    @property
    def ref(self) -> iam.ResourceRef:
        return iam.ResourceRef(self.resource_type, self.id, self.project_id)

    @property
    def org_id(self) -> str:
        return self.scope_path.split("/")[1]

    def stream_target(self) -> StreamTarget:
        return StreamTarget(node_id=self.node_id, resource_type=self.resource_type,
                            resource_id=self.id, endpoint=self.endpoint)


Resolver = Callable[[Session, str], AccessTarget]


@dataclass(frozen=True)
class ResourceKind:
    prefix: str
    resource_type: str
    resolve: Resolver
    # Kinds of this resource a project may publish as an API endpoint (GPUaaS: api-app).
    publishable: frozenset[str]


_KINDS: dict[str, ResourceKind] = {}


def register_resource(prefix: str, resource_type: str, resolve: Resolver, *,
                      publishable: Iterable[str] = ()) -> None:
    """Teach access a resource type (called by the composition root)."""
    _KINDS[prefix] = ResourceKind(prefix, resource_type, resolve, frozenset(publishable))


def resource_kind(resource_id: str) -> ResourceKind:
    kind = _KINDS.get(id_prefix(resource_id) or "")
    if kind is None:
        raise NotFound("not found")
    return kind


def resolve_resource(session: Session, resource_id: str) -> AccessTarget:
    """The resource, or NotFound (also for ids of no registered type)."""
    return resource_kind(resource_id).resolve(session, resource_id)
