"""GPU nodes (platform operators): list, cordon, drain, uncordon; join tokens and
credential revocation (how hosts join: ``api/routes/agent_link.py``)."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated

from fastapi import APIRouter

from aicloud.api.authz import PLATFORM_SCOPE, Authorize, Caller, path_param
from aicloud.api.deps import Context, RequestRoute
from aicloud.products import gpuaas

router = APIRouter(tags=["gpuaas: nodes"], route_class=RequestRoute)

NODE = path_param("node_id")
Reader = Annotated[Caller, Authorize("gpuaas.nodes.read", scope=PLATFORM_SCOPE)]
Writer = Annotated[Caller, Authorize("gpuaas.nodes.write", scope=NODE)]
Joiner = Annotated[Caller, Authorize("gpuaas.nodes.join", scope=PLATFORM_SCOPE)]
NodeJoiner = Annotated[Caller, Authorize("gpuaas.nodes.join", scope=NODE)]
TokenJoiner = Annotated[Caller, Authorize("gpuaas.nodes.join", scope=path_param("token_id"))]


@router.get("/nodes", response_model=list[gpuaas.Node])
def list_nodes(caller: Reader) -> list[gpuaas.Node]:
    """Every node with its state, GPUs (health, holder) and inventory source; ``simulated``
    says when the GPUs come from a static inventory rather than hardware."""
    return gpuaas.list_nodes(caller.session)


@router.post("/nodes/join-tokens", response_model=gpuaas.JoinTokenCreated, status_code=201)
def create_join_token(body: gpuaas.JoinTokenCreate, caller: Joiner,
                      ctx: Context) -> gpuaas.JoinTokenCreated:
    """A token a new host joins the pool with (``aicloud agent --url --token``): valid for
    ``uses`` joins until it expires. The secret is in this answer only."""
    return gpuaas.create_join_token(caller.session, expires_in=timedelta(
        seconds=body.expires_in_seconds), max_uses=body.uses, description=body.description,
        actor=caller.actor, now=ctx.clock.now())


@router.get("/nodes/join-tokens", response_model=list[gpuaas.JoinToken])
def list_join_tokens(caller: Joiner) -> list[gpuaas.JoinToken]:
    """Every join token (never its secret), newest first."""
    return gpuaas.list_join_tokens(caller.session)


@router.post("/nodes/join-tokens/{token_id}/revoke", response_model=gpuaas.JoinToken)
def revoke_join_token(token_id: str, caller: TokenJoiner, ctx: Context) -> gpuaas.JoinToken:
    """No more joins with this token (nodes that joined with it keep their credentials)."""
    return gpuaas.revoke_join_token(caller.session, token_id, actor=caller.actor,
                                    now=ctx.clock.now())


@router.post("/nodes/{node_id}/revoke", response_model=gpuaas.Node)
def revoke_node(node_id: str, caller: NodeJoiner, ctx: Context,
                body: gpuaas.NodeRevoke | None = None) -> gpuaas.Node:
    """Revoke the node's credential: it is cordoned at once, its agent's link is closed
    within a second and refused from then on. It returns by joining again."""
    node = gpuaas.revoke_node(caller.session, node_id, actor=caller.actor, now=ctx.clock.now(),
                              reason=(body or gpuaas.NodeRevoke()).reason)
    return gpuaas.node_view(caller.session, node)


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
