"""The node agents' edge: joining the pool, rotating a node credential, and (``link``) the
one long-lived WebSocket each agent keeps open.

These routes are ``PUBLIC`` to IAM: no user or API key calls them. Each authenticates the
host itself (a join token, or its node credential as a bearer token) through GPUaaS's
node identity, and every error is a problem document saying what to do.
"""

from __future__ import annotations

from fastapi import APIRouter, Request

from aicloud.api.authz import PUBLIC
from aicloud.api.deps import Context, DbSession, bearer_token
from aicloud.products import gpuaas
from aicloud.shared.errors import Unauthenticated

router = APIRouter(prefix="/agent/v1", tags=["node agents"])


def _ip(request: Request) -> str | None:
    return request.client.host if request.client else None


@router.post("/join", response_model=gpuaas.NodeJoined, status_code=201,
             dependencies=[PUBLIC])
def join(body: gpuaas.NodeJoin, request: Request, session: DbSession,
         ctx: Context) -> gpuaas.NodeJoined:
    """Spend one use of a join token: the host becomes a node of the pool and gets its node
    credential (in this answer only; the agent keeps it in its state directory)."""
    joined = gpuaas.join_node(session, token=body.token, report=gpuaas.report_of(body.node),
                              now=ctx.clock.now(), ip=_ip(request))
    return gpuaas.NodeJoined(node_id=joined.node_id, node_name=joined.node_name,
                             credential_id=joined.credential_id, credential=joined.credential)


@router.post("/credential/rotate", response_model=gpuaas.NodeJoined, dependencies=[PUBLIC])
def rotate(request: Request, session: DbSession, ctx: Context) -> gpuaas.NodeJoined:
    """A new credential for the calling node; the one it authenticated with stops working
    when this commits."""
    token = bearer_token(request)
    if not token:
        raise Unauthenticated("send the node credential as a bearer token")
    who = gpuaas.authenticate_node(session, token)
    joined = gpuaas.rotate_credential(session, who, now=ctx.clock.now())
    return gpuaas.NodeJoined(node_id=joined.node_id, node_name=joined.node_name,
                             credential_id=joined.credential_id, credential=joined.credential)
