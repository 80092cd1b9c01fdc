"""GPU instances: launch, list, get, stop, logs; and the instance types."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Response

from aicloud.api.authz import Authenticated, Authorize, Caller, path_param
from aicloud.api.deps import Context, RequestRoute
from aicloud.api.idempotency import Idempotency
from aicloud.api.listing import DEFAULT, Cursor, Limit, page
from aicloud.platform import iam
from aicloud.products import gpuaas
from aicloud.runtime import gpuaas as gpuaas_runtime
from aicloud.shared.pagination import Page

router = APIRouter(tags=["gpuaas: instances"], route_class=RequestRoute)

PRJ = path_param("project_id")
INST = path_param("instance_id")


@router.get("/instance-types", response_model=list[gpuaas.InstanceType])
def list_instance_types(caller: Authenticated) -> list[gpuaas.InstanceType]:
    """The instance types of the catalog (what a project may use is checked at launch)."""
    return gpuaas.list_types(caller.session)


@router.post("/projects/{project_id}/instances", status_code=201,
             response_model=gpuaas.Instance)
def launch_instance(project_id: str, body: gpuaas.InstanceLaunch, idem: Idempotency,
                    caller: Annotated[Caller, Authorize("gpuaas.instances.create", scope=PRJ)],
                    ctx: Context) -> Response:
    """Launch an instance: admitted (quota, type, budget, billing hold) or refused with the
    limit that stopped it; placed when capacity allows (see ``queue_position``)."""
    path = iam.scope_path(caller.session, project_id)
    who = gpuaas.Requester(principal_id=caller.id, org_id=path.split("/")[1],
                           project_id=project_id, scope_path=path)
    return idem.respond(caller.session, lambda: gpuaas.launch(
        caller.session, body, who=who, actor=caller.actor, idempotency_key=idem.key,
        now=ctx.clock.now()), status_code=201)


@router.get("/projects/{project_id}/instances", response_model=Page[gpuaas.Instance])
def list_instances(project_id: str,
                   caller: Annotated[Caller, Authorize("gpuaas.instances.read", scope=PRJ)],
                   cursor: Cursor = None, limit: Limit = DEFAULT) -> Page[gpuaas.Instance]:
    return page(lambda after, n: gpuaas.list_instances(
        caller.session, project_id=project_id, after=after, limit=n), cursor, limit)


@router.get("/instances/{instance_id}", response_model=gpuaas.Instance)
def get_instance(instance_id: str,
                 caller: Annotated[Caller, Authorize("gpuaas.instances.read", scope=INST)],
                 ) -> gpuaas.Instance:
    """State, reason and time of every step, queue position while waiting, endpoint."""
    return gpuaas.get_instance(caller.session, instance_id)


@router.post("/instances/{instance_id}/stop", response_model=gpuaas.Instance)
def stop_instance(instance_id: str, ctx: Context,
                  caller: Annotated[Caller, Authorize("gpuaas.instances.stop", scope=INST)],
                  body: gpuaas.InstanceStop | None = None) -> gpuaas.Instance:
    """Cancel a waiting instance at once, or ask its node to stop it (idempotent)."""
    reason = (body or gpuaas.InstanceStop()).reason
    m = gpuaas.request_stop(caller.session, instance_id, reason=reason, actor=caller.actor,
                            now=ctx.clock.now())
    return gpuaas.instance_view(caller.session, m)


@router.get("/instances/{instance_id}/logs", response_model=gpuaas.LogOutput)
def instance_logs(instance_id: str, ctx: Context,
                  caller: Annotated[Caller, Authorize("gpuaas.instances.read", scope=INST)],
                  offset: Annotated[int, Query(ge=0)] = 0,
                  tail_lines: Annotated[int | None, Query(ge=1, le=10_000)] = None,
                  ) -> gpuaas.LogOutput:
    """Output of the workload from ``offset`` (follow with ``next_offset``) or its last
    ``tail_lines``; empty until it has started."""
    m = gpuaas.get_instance_model(caller.session, instance_id)
    return gpuaas_runtime.instance_logs(ctx.settings, m.provider, m.provider_ref,
                                        offset=offset, tail_lines=tail_lines,
                                        ended=gpuaas.is_terminal(gpuaas.InstanceState(m.state)),
                                        node_id=m.node_id, links=ctx.node_links)
