"""A node agent that talks only to the API: join once, then one link.

``aicloud agent --url URL --token T`` joins the pool (``POST /agent/v1/join``) and keeps the
node credential it receives in ``<state dir>/node.json`` (mode 0600, written atomically). A
restart finds it there and needs no token. The agent then holds one WebSocket
(``/agent/v1/link``): its node operations are RPCs (``LinkNodeStore``), the API asks it for
a workload's logs over the same link (``logs.read``), and the gateway tells it when its work
changed (``work.changed``).
"""

from __future__ import annotations

import base64
import json
import logging
import os
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx

from aicloud.adapters.providers.base import ComputeProvider, WorkloadHandle, WorkloadNotFound
from aicloud.platform import audit
from aicloud.products import gpuaas
from aicloud.runtime import gpuaas as gpuaas_runtime
from aicloud.shared.clock import Clock
from aicloud.shared.config import Settings
from aicloud.shared.db import Database
from aicloud.shared.errors import Unauthenticated
from aicloud.shared.link import Channel, LinkClient
from aicloud.shared.link.rpc import OpError

log = logging.getLogger(__name__)
STATE_FILE = "node.json"
MAX_LOG_CHUNK = 256 * 1024


class JoinFailed(RuntimeError):
    pass


@dataclass(frozen=True)
class NodeCredentials:
    url: str
    node_id: str
    node_name: str
    credential_id: str
    credential: str


def state_path(state_dir: Path) -> Path:
    return state_dir / STATE_FILE


def load_credentials(state_dir: Path) -> NodeCredentials | None:
    path = state_path(state_dir)
    if not path.exists():
        return None
    if path.stat().st_mode & 0o077:
        raise JoinFailed(f"{path} is readable by others; it holds the node's secret: "
                         "chmod 600 it (or remove it and join again)")
    data = json.loads(path.read_text())
    return NodeCredentials(**{k: data[k] for k in NodeCredentials.__dataclass_fields__})


def save_credentials(state_dir: Path, creds: NodeCredentials) -> Path:
    """Atomically, readable by this user only."""
    state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = state_path(state_dir)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(asdict(creds), fh)
        fh.flush()
        os.fsync(fh.fileno())
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)
    return path


def join(url: str, token: str, report: gpuaas.NodeReport, *,
         transport: httpx.BaseTransport | None = None, timeout: float = 30.0) -> NodeCredentials:
    base = url.rstrip("/")
    with httpx.Client(base_url=base, timeout=timeout, transport=transport) as http:
        resp = http.post("/agent/v1/join", json={"token": token,
                                                 "node": gpuaas.report_out(report)})
    if resp.status_code != 201:
        try:
            detail = resp.json().get("detail", resp.text)
        except ValueError:
            detail = resp.text
        raise JoinFailed(f"joining {base} failed (HTTP {resp.status_code}): {detail}")
    body = resp.json()
    return NodeCredentials(url=base, node_id=body["node_id"], node_name=body["node_name"],
                           credential_id=body["credential_id"], credential=body["credential"])


def rotate(creds: NodeCredentials, state_dir: Path, *,
           transport: httpx.BaseTransport | None = None) -> NodeCredentials:
    """A new credential for this node (``POST /agent/v1/credential/rotate``), saved in place
    of the old one, which stops working at once."""
    with httpx.Client(base_url=creds.url, timeout=30, transport=transport) as http:
        resp = http.post("/agent/v1/credential/rotate",
                         headers={"Authorization": f"Bearer {creds.credential}"})
    if resp.status_code != 200:
        raise JoinFailed(f"rotating the credential failed (HTTP {resp.status_code}): "
                         f"{resp.text[:300]}")
    body = resp.json()
    new = NodeCredentials(url=creds.url, node_id=body["node_id"], node_name=body["node_name"],
                          credential_id=body["credential_id"], credential=body["credential"])
    save_credentials(state_dir, new)
    return new


def credentials_for(url: str, token: str | None, state_dir: Path,
                    report: gpuaas.NodeReport) -> tuple[NodeCredentials, bool]:
    """The node's credential from its state dir, or a new one by joining with ``token``;
    (credentials, joined now)."""
    base = url.rstrip("/")
    found = load_credentials(state_dir)
    if found is not None and found.url == base:
        return found, False
    if token is None:
        where = state_path(state_dir)
        raise JoinFailed(f"no node credential for {base} in {where}: pass --token (make one "
                         "with `aicloud nodes join-token`)")
    creds = join(base, token, report)
    save_credentials(state_dir, creds)
    return creds, True


def link_url(url: str) -> str:
    base = url.rstrip("/")
    if base.startswith("https://"):
        return "wss://" + base[len("https://"):] + "/agent/v1/link"
    if base.startswith("http://"):
        return "ws://" + base[len("http://"):] + "/agent/v1/link"
    raise JoinFailed(f"--url must start with http:// or https:// (got {url!r})")


def _read_logs(provider: ComputeProvider, args: dict[str, Any]) -> dict[str, Any]:
    ref, name = args.get("ref"), args.get("provider")
    offset, tail = args.get("offset", 0), args.get("tail_lines")
    if (not isinstance(ref, str) or not isinstance(name, str) or not isinstance(offset, int)
            or offset < 0 or not (tail is None or (isinstance(tail, int) and tail > 0))):
        raise OpError("bad-request", "logs.read needs provider, ref, offset >= 0, tail_lines")
    try:
        chunk = provider.logs(WorkloadHandle(name, ref), offset=offset,
                              limit=MAX_LOG_CHUNK, tail_lines=tail)
    except WorkloadNotFound:
        return {"data": "", "offset": offset, "next_offset": offset, "complete": True}
    return {"data": base64.b64encode(chunk.data).decode(), "offset": chunk.offset,
            "next_offset": chunk.next_offset, "complete": chunk.complete}


async def _stream_logs(provider: ComputeProvider, channel: Channel,
                       args: dict[str, Any]) -> None:
    """A workload's output from ``offset``, followed until it has ended and all was sent
    (the channel's credit window paces it to its reader)."""
    import anyio

    offset = args.get("offset", 0)
    if not isinstance(offset, int) or offset < 0:
        raise OpError("bad-request", "offset must be an integer >= 0")
    while True:
        out = await anyio.to_thread.run_sync(_read_logs, provider, {**args, "offset": offset,
                                                                    "tail_lines": None})
        data = base64.b64decode(out["data"])
        if data:
            await channel.write(data)
        offset = out["next_offset"]
        if out["complete"]:
            return
        if not data:
            await anyio.sleep(0.2)


StreamHandler = Callable[[ComputeProvider, Channel, dict[str, Any]], Awaitable[None]]
# The byte streams an agent opens for the API, by kind (the terminal and the app proxy plug
# in here).
STREAMS: dict[str, StreamHandler] = {"logs": _stream_logs}


@dataclass
class LinkedAgent:
    agent: gpuaas.NodeAgent
    link: LinkClient
    store: gpuaas.LinkNodeStore
    credentials: NodeCredentials | None


def build_linked_agent(settings: Settings, creds: NodeCredentials, clock: Clock, *,
                       provider: ComputeProvider | None = None,
                       node_name: str | None = None) -> LinkedAgent:
    """This host's agent over its link (not started: ``link.start()`` then the agent's
    controllers)."""
    return _linked(settings, lambda: link_url(creds.url), lambda: creds.credential, clock,
                   provider=provider, node_name=node_name or creds.node_name,
                   label=creds.node_id, creds=creds)


def _linked(settings: Settings, url: Callable[[], str], credential: Callable[[], str],
            clock: Clock, *, provider: ComputeProvider | None, node_name: str | None,
            label: str, creds: NodeCredentials | None) -> LinkedAgent:
    import anyio.to_thread

    provider = provider or gpuaas_runtime.compute_provider(settings)
    holder: dict[str, LinkClient] = {}
    store = gpuaas.LinkNodeStore(lambda op, args: holder["link"].call(op, args),
                                 connected=lambda: holder["link"].is_connected())

    async def handle(op: str, args: dict[str, Any]) -> Any:
        if op == "logs.read":
            return await anyio.to_thread.run_sync(_read_logs, provider, args)
        raise OpError("unknown-op", f"the agent has no op {op!r}")

    async def on_push(name: str, args: dict[str, Any]) -> None:
        if name == "work.changed":
            store.work_changed()

    async def on_connect() -> None:
        store.work_changed()  # whatever changed while it was away

    async def on_channel(channel: Channel, kind: str, args: dict[str, Any]) -> None:
        stream = STREAMS.get(kind)
        if stream is None:
            raise OpError("unknown-stream", f"the agent opens no {kind!r} streams")
        await stream(provider, channel, args)

    link = LinkClient(url, credential, handler=handle, on_push=on_push, on_connect=on_connect,
                      on_channel=on_channel, name=f"link of {label}")
    holder["link"] = link
    agent = gpuaas_runtime.agent_over(settings, store, clock, provider=provider,
                                      node_name=node_name)
    return LinkedAgent(agent=agent, link=link, store=store, credentials=creds)


def default_state_dir(settings: Settings) -> Path:
    return Path(settings.providers.local_root).resolve().parent / "agent"


SERVE = audit.Actor.system("serve")


def embedded_agent(settings: Settings, db: Database, clock: Clock,
                   url: Callable[[], str | None]) -> LinkedAgent:
    """The node agent ``aicloud serve`` runs for its own host, through the same join and
    link as any other host's, over loopback. The server mints its own one-use join token
    (it is the control plane); the credential is kept in the state dir like ``aicloud
    agent``'s. The join happens on the link's first connection (the API must listen)."""
    state_dir = default_state_dir(settings)
    report = gpuaas_runtime.node_report(settings)
    current: dict[str, NodeCredentials] = {}

    def base() -> str:
        found = url()
        if found is None:
            raise JoinFailed("the API is not listening yet")
        return found.rstrip("/")

    def credential() -> str:
        creds = current.get("creds") or load_credentials(state_dir)
        # Any URL: the same control plane on another port still knows the credential.
        if creds is None or not _known(db, creds.credential):
            creds = _bootstrap_join(db, clock, base(), report)
            save_credentials(state_dir, creds)
        current["creds"] = creds
        return creds.credential

    return _linked(settings, lambda: link_url(base()), credential, clock, provider=None,
                   node_name=report.name, label=f"{report.name} (embedded)", creds=None)


def _known(db: Database, credential: str) -> bool:
    """False only when the database does not know it (reset): a revoked one is kept, so an
    operator's revocation is not undone by a restart."""
    with db.read_transaction() as session:
        try:
            gpuaas.authenticate_node(session, credential)
        except Unauthenticated as e:
            return "unknown" not in e.detail
    return True


def _bootstrap_join(db: Database, clock: Clock, base: str,
                    report: gpuaas.NodeReport) -> NodeCredentials:
    def token() -> str:
        with db.transaction() as session:
            return gpuaas.create_join_token(
                session, expires_in=timedelta(minutes=5), max_uses=1, actor=SERVE,
                description=f"embedded agent of {report.name}", now=clock.now()).token

    try:
        return join(base, token(), report)
    except JoinFailed as e:
        if "HTTP 409" not in str(e):
            raise
    # This host's node holds a credential whose copy was lost (state dir removed): retire it.
    with db.transaction() as session:
        node = gpuaas.node_by_name(session, report.name)
        if node is not None:
            gpuaas.revoke_node(session, node.id, actor=SERVE, now=clock.now(),
                               reason="its embedded agent lost the credential; re-joined")
    return join(base, token(), report)
