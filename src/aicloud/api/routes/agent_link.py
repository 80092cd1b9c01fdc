"""The node agents' edge: joining the pool, rotating a node credential, and (``link``) the
one long-lived WebSocket each agent keeps open.

These routes are ``PUBLIC`` to IAM: no user or API key calls them. Each authenticates the
host itself (a join token, or its node credential as a bearer token) through GPUaaS's
node identity, and every error is a problem document saying what to do.
"""

from __future__ import annotations

from typing import Any

import anyio.to_thread
from fastapi import APIRouter, Request, WebSocket
from pydantic import BaseModel, ConfigDict, Field
from starlette.websockets import WebSocketDisconnect

from aicloud.api.authz import PUBLIC
from aicloud.api.deps import Context, DbSession, RequestRoute, bearer_token
from aicloud.products import gpuaas
from aicloud.runtime import AppContext
from aicloud.runtime.node_links import RELAY_HEADER
from aicloud.shared.errors import Unauthenticated
from aicloud.shared.link import (
    CLOSE_REFUSED,
    CLOSE_TOO_BIG,
    MAX_BINARY_FRAME,
    MAX_TEXT_FRAME,
    LinkClosed,
)

router = APIRouter(prefix="/agent/v1", tags=["node agents"], route_class=RequestRoute)


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


class RelayRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    node_id: str = Field(min_length=1, max_length=64)
    op: str = Field(min_length=1, max_length=64)
    args: dict[str, Any]


@router.post("/relay", dependencies=[PUBLIC], include_in_schema=False)
def relay(body: RelayRequest, request: Request, ctx: Context) -> dict[str, Any]:
    """Another API process asks this one to ask a node whose link it holds (internal:
    authenticated by an HMAC of the platform's secret key, relayable ops only)."""
    hub = ctx.node_links
    if not hub.verify_relay(request.headers.get(RELAY_HEADER, ""), body.node_id, body.op):
        raise Unauthenticated("not a valid relay request")
    return {"result": hub.call(body.node_id, body.op, body.args, relay=False)}


class _StarletteTransport:
    """The link over Starlette's WebSocket; a frame over the limits closes it (1009)."""

    def __init__(self, ws: WebSocket):
        self.ws = ws

    async def send_text(self, data: str) -> None:
        try:
            await self.ws.send_text(data)
        except (WebSocketDisconnect, RuntimeError) as e:
            raise LinkClosed(str(e)) from None

    async def send_bytes(self, data: bytes) -> None:
        try:
            await self.ws.send_bytes(data)
        except (WebSocketDisconnect, RuntimeError) as e:
            raise LinkClosed(str(e)) from None

    async def receive(self) -> str | bytes:
        try:
            message = await self.ws.receive()
        except (WebSocketDisconnect, RuntimeError) as e:
            raise LinkClosed(str(e)) from None
        if message["type"] == "websocket.disconnect":
            raise LinkClosed(f"closed by the agent ({message.get('code')})")
        text, data = message.get("text"), message.get("bytes")
        if text is not None:
            if len(text) > MAX_TEXT_FRAME:
                await self.close(CLOSE_TOO_BIG, f"text frame over {MAX_TEXT_FRAME} bytes")
                raise LinkClosed("oversized text frame")
            return str(text)
        if data is not None and len(data) > MAX_BINARY_FRAME:
            await self.close(CLOSE_TOO_BIG, f"binary frame over {MAX_BINARY_FRAME} bytes")
            raise LinkClosed("oversized binary frame")
        return bytes(data or b"")

    async def close(self, code: int, reason: str) -> None:
        try:
            await self.ws.close(code, reason[:120])
        except RuntimeError:
            pass  # already closed


def _authenticate(ctx: AppContext, token: str) -> gpuaas.NodeIdentity:
    with ctx.db.read_transaction() as session:
        return gpuaas.authenticate_node(session, token)


@router.websocket("/link", dependencies=[PUBLIC])
async def link(websocket: WebSocket) -> None:
    """The agent's one long-lived connection (``Authorization: Bearer <node credential>``):
    JSON RPCs both ways and byte channels (``aicloud.shared.link``). A bad, unknown or
    revoked credential is closed with code 4401 and the reason."""
    ctx: AppContext = websocket.app.state.context
    header = websocket.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    await websocket.accept()
    if scheme.lower() != "bearer" or not token.strip():
        await websocket.close(CLOSE_REFUSED, "send the node credential as a bearer token")
        return
    try:
        identity = await anyio.to_thread.run_sync(_authenticate, ctx, token.strip())
    except Unauthenticated as e:
        await websocket.close(CLOSE_REFUSED, e.detail[:120])
        return
    await ctx.node_links.serve(_StarletteTransport(websocket), identity)
