"""GPU nodes (platform operators): list, cordon, drain, uncordon."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter

from aicloud.api.authz import PLATFORM_SCOPE, Authorize, Caller, path_param
from aicloud.api.deps import Context, RequestRoute
from aicloud.products import gpuaas

router = APIRouter(tags=["gpuaas: nodes"], route_class=RequestRoute)

NODE = path_param("node_id")
Reader = Annotated[Caller, Authorize("gpuaas.nodes.read", scope=PLATFORM_SCOPE)]
Writer = Annotated[Caller, Authorize("gpuaas.nodes.write", scope=NODE)]


@router.get("/nodes", response_model=list[gpuaas.Node])
def list_nodes(caller: Reader) -> list[gpuaas.Node]:
    """Every node with its state, GPUs (health, holder) and inventory source; ``simulated``
    says when the GPUs come from a static inventory rather than hardware."""
    return gpuaas.list_nodes(caller.session)


def _change(caller: Caller, ctx: Context, node_id: str, action: str,
            body: gpuaas.NodeStateChange | None) -> gpuaas.Node:
    spec = body or gpuaas.NodeStateChange()
    node = gpuaas.change_node_state(caller.session, node_id, action, actor=caller.actor,
                                    now=ctx.clock.now(), grace_seconds=spec.grace_seconds,
                                    reason=spec.reason)
    return gpuaas.node_view(caller.session, node)


@router.post("/nodes/{node_id}/cordon", response_model=gpuaas.Node)
def cordon(node_id: str, caller: Writer, ctx: Context,
           body: gpuaas.NodeStateChange | None = None) -> gpuaas.Node:
    """No new placements; running instances stay."""
    return _change(caller, ctx, node_id, "cordon", body)


@router.post("/nodes/{node_id}/drain", response_model=gpuaas.Node)
def drain(node_id: str, caller: Writer, ctx: Context,
          body: gpuaas.NodeStateChange | None = None) -> gpuaas.Node:
    """No new placements; running instances are stopped after ``grace_seconds``."""
    return _change(caller, ctx, node_id, "drain", body)


@router.post("/nodes/{node_id}/uncordon", response_model=gpuaas.Node)
def uncordon(node_id: str, caller: Writer, ctx: Context,
             body: gpuaas.NodeStateChange | None = None) -> gpuaas.Node:
    """Back to ready: placements resume."""
    return _change(caller, ctx, node_id, "uncordon", body)
