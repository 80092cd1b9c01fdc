"""API endpoints of a project (publish, unpublish, list) and their keys (create, revoke).

The endpoints themselves are served by the proxy (api/routes/access_proxy.py) at
``/endpoints/{name}/``; these routes manage them.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, BackgroundTasks, Response

from aicloud.api.authz import Authorize, Caller, path_param
from aicloud.api.deps import Context, RequestRoute
from aicloud.api.listing import DEFAULT, Cursor, Limit, page
from aicloud.platform import access
from aicloud.shared.pagination import Page

router = APIRouter(tags=["access: API endpoints"], route_class=RequestRoute)

PRJ = path_param("project_id")
EP = path_param("endpoint_id")
KEY = path_param("endpoint_key_id")


@router.post("/projects/{project_id}/endpoints", status_code=201,
             response_model=access.Endpoint)
def publish_endpoint(project_id: str, body: access.EndpointCreate,
                     caller: Annotated[Caller, Authorize("access.endpoints.write", scope=PRJ)],
                     ) -> access.Endpoint:
    """Publish one of the project's api-app instances at ``/endpoints/{name}/`` (the name
    is unique on the platform). Callers need a key of the endpoint."""
    return access.publish(caller.session, project_id, body, actor=caller.actor)


@router.get("/projects/{project_id}/endpoints", response_model=Page[access.Endpoint])
def list_endpoints(project_id: str,
                   caller: Annotated[Caller, Authorize("access.endpoints.read", scope=PRJ)],
                   cursor: Cursor = None, limit: Limit = DEFAULT) -> Page[access.Endpoint]:
    return page(lambda after, n: access.list_endpoints(
        caller.session, project_id, after=after, limit=n), cursor, limit)


@router.get("/api-endpoints/{endpoint_id}", response_model=access.Endpoint)
def get_endpoint(endpoint_id: str,
                 caller: Annotated[Caller, Authorize("access.endpoints.read", scope=EP)],
                 ) -> access.Endpoint:
    return access.endpoint_view(access.get_endpoint_model(caller.session, endpoint_id))


@router.delete("/api-endpoints/{endpoint_id}", status_code=204)
def unpublish_endpoint(endpoint_id: str, ctx: Context, after: BackgroundTasks,
                       caller: Annotated[Caller, Authorize("access.endpoints.write",
                                                           scope=EP)]) -> Response:
    """Stop serving it; its keys go with it and the name becomes free."""
    access.unpublish(caller.session, endpoint_id, actor=caller.actor)
    ctx.access.forget_endpoint(endpoint_id)
    after.add_task(ctx.access.forget_endpoint, endpoint_id)  # again once committed
    return Response(status_code=204)


@router.post("/api-endpoints/{endpoint_id}/keys", status_code=201,
             response_model=access.EndpointKeyCreated)
def create_endpoint_key(endpoint_id: str, body: access.EndpointKeyCreate,
                        caller: Annotated[Caller, Authorize("access.endpoint_keys.write",
                                                            scope=EP)],
                        ) -> access.EndpointKeyCreated:
    """A key for this endpoint only; the secret is in this answer and nowhere else."""
    return access.create_key(caller.session, endpoint_id, body, actor=caller.actor)


@router.get("/api-endpoints/{endpoint_id}/keys", response_model=Page[access.EndpointKey])
def list_endpoint_keys(endpoint_id: str,
                       caller: Annotated[Caller, Authorize("access.endpoints.read", scope=EP)],
                       cursor: Cursor = None, limit: Limit = DEFAULT,
                       ) -> Page[access.EndpointKey]:
    return page(lambda after, n: access.list_keys(
        caller.session, endpoint_id, after=after, limit=n), cursor, limit)


@router.post("/endpoint-keys/{endpoint_key_id}/revoke", response_model=access.EndpointKey)
def revoke_endpoint_key(endpoint_key_id: str, ctx: Context, after: BackgroundTasks,
                        caller: Annotated[Caller, Authorize("access.endpoint_keys.write",
                                                            scope=KEY)],
                        ) -> access.EndpointKey:
    """Refused at once by this API process, by the others within a few seconds."""
    key = access.revoke_key(caller.session, endpoint_key_id, actor=caller.actor)
    ctx.access.forget_key(endpoint_key_id)
    after.add_task(ctx.access.forget_key, endpoint_key_id)  # again once committed
    return key
