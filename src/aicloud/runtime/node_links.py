"""The node links this API process holds: one per connected agent.

The WebSocket edge (``api/routes/agent_link.py``) authenticates a node and hands its
connection here. Each link gets a GPUaaS gateway bound to the node of its credential; the
ops it serves go through the database, so any replica can serve any node's control path.

One link per node in this process: a new connection of the same node closes the older one
(``CLOSE_REPLACED``). Once a second, for all of its links at once, the hub runs two small
queries: which credentials were revoked (those links are closed with ``CLOSE_REFUSED``
within the second) and a digest of each node's work (a node whose digest moved is sent
``work.changed``, so agents read their work when it changes instead of polling).

Across processes: ``gpuaas_node_links`` names the process holding each node's link (its
replica id, internal URL and an epoch that grows with every new link of the node). The
once-a-second check closes a local link whose row names another process or a newer epoch,
so a node has one link in the whole control plane. Requests to a node (a workload's logs)
go to the holder: :meth:`NodeLinkHub.call` asks the agent over the local link, or relays the
request to the holder's internal URL (``POST /agent/v1/relay``, authenticated by an HMAC of
the platform's secret key, for the relayable ops only).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import logging
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import anyio.to_thread
import httpx

from aicloud.products import gpuaas
from aicloud.shared.clock import Clock
from aicloud.shared.db import Database
from aicloud.shared.errors import AppError, ServiceUnavailable
from aicloud.shared.link import CLOSE_REFUSED, CLOSE_REPLACED, Channel, Peer, Transport
from aicloud.shared.link.rpc import OpError

log = logging.getLogger(__name__)


# What one API process may ask another to ask a node it holds the link of.
RELAYABLE = frozenset({"logs.read"})
RELAY_HEADER = "x-aicloud-relay"
RELAY_MAX_AGE = 60.0


def relay_signature(secret: str, node_id: str, op: str, at: int) -> str:
    key = hmac.new(secret.encode(), b"aicloud node-link relay", hashlib.sha256).digest()
    return hmac.new(key, f"{node_id}\n{op}\n{at}".encode(), hashlib.sha256).hexdigest()


@dataclass
class _Link:
    identity: gpuaas.NodeIdentity
    peer: Peer
    epoch: int = 0
    version: str | None = None


@dataclass
class NodeLinkHub:
    db: Database
    clock: Clock
    secret: str = ""
    # How other API processes reach this one (set by `serve` / `api` once they know it).
    internal_url: str | None = None
    check_interval: float = 1.0
    replica_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    links: dict[str, _Link] = field(default_factory=dict)
    loop: asyncio.AbstractEventLoop | None = None
    _monitor: asyncio.Task[None] | None = None

    async def serve(self, transport: Transport, identity: gpuaas.NodeIdentity) -> None:
        """Serve one authenticated node's link until it closes."""
        self.loop = asyncio.get_running_loop()
        gateway = gpuaas.NodeGateway(self.db, identity, self.clock)

        async def handle(op: str, args: dict[str, Any]) -> Any:
            try:
                return await anyio.to_thread.run_sync(gateway.handle, op, args)
            except gpuaas.GatewayBadRequest as e:
                raise OpError("bad-request", str(e)) from None
            except AppError as e:
                raise OpError(e.code, e.detail, temporary=e.status >= 500) from None

        peer = Peer(transport, handler=handle, initiator=False,
                    name=f"link of {identity.node_id}")
        epoch = await anyio.to_thread.run_sync(self._hold, identity.node_id)
        old = self.links.get(identity.node_id)
        self.links[identity.node_id] = _Link(identity, peer, epoch=epoch)
        if old is not None:
            await old.peer.close(CLOSE_REPLACED, "a newer link of this node took over")
        if self._monitor is None or self._monitor.done():
            self._monitor = asyncio.create_task(self._watch())
        log.info("node %s linked (credential %s, epoch %d)", identity.node_id,
                 identity.credential_id, epoch)
        try:
            await peer.run()
        finally:
            current = self.links.get(identity.node_id)
            if current is not None and current.peer is peer:
                del self.links[identity.node_id]
            with contextlib.suppress(Exception):
                await anyio.to_thread.run_sync(self._drop, identity.node_id, epoch)
            log.info("node %s unlinked (epoch %d)", identity.node_id, epoch)

    def _hold(self, node_id: str) -> int:
        with self.db.transaction() as session:
            return gpuaas.hold_link(session, node_id, replica_id=self.replica_id,
                                    internal_url=self.internal_url or "",
                                    now=self.clock.now())

    def _drop(self, node_id: str, epoch: int) -> None:
        with self.db.transaction() as session:
            gpuaas.drop_link(session, node_id, replica_id=self.replica_id, epoch=epoch)

    async def _watch(self) -> None:
        while self.links:
            await asyncio.sleep(self.check_interval)
            current = dict(self.links)
            try:
                revoked, versions, holders = await anyio.to_thread.run_sync(self._check,
                                                                            current)
            except Exception:
                log.exception("node links: checking credentials and work failed")
                continue
            for node_id, link in current.items():
                if link.identity.credential_id in revoked:
                    await link.peer.close(CLOSE_REFUSED, "node credential revoked")
                    continue
                holder = holders.get(node_id)
                if holder is not None and (holder.replica_id, holder.epoch) != (
                        self.replica_id, link.epoch) and holder.epoch > link.epoch:
                    await link.peer.close(CLOSE_REPLACED, "a newer link of this node took "
                                                          "over (another API process)")
                    continue
                version = versions.get(node_id)
                if link.version is not None and version != link.version:
                    with contextlib.suppress(ConnectionError):
                        await link.peer.push("work.changed")
                link.version = version

    def _check(self, links: dict[str, _Link]
               ) -> tuple[set[str], dict[str, str], dict[str, gpuaas.LinkHolder]]:
        with self.db.read_transaction() as session:
            revoked = gpuaas.revoked_among(
                session, [link.identity.credential_id for link in links.values()])
            return (revoked, gpuaas.work_versions(session, list(links)),
                    gpuaas.link_holders(session, list(links)))

    async def open_stream(self, node_id: str, kind: str, args: dict[str, Any]) -> Channel:
        """A byte stream from (and to) a node's agent, e.g. ``logs`` of a workload; on the
        loop of this process's links. 503 when this process has no link to the node."""
        link = self.links.get(node_id)
        if link is None or link.peer.closed:
            raise ServiceUnavailable(f"node {node_id} is not connected to this API process")
        return await link.peer.open_channel(kind, args)

    def linked(self, node_id: str) -> bool:
        """This process holds the node's link."""
        link = self.links.get(node_id)
        return link is not None and not link.peer.closed

    def has_link(self, node_id: str) -> bool:
        """Some API process holds the node's link (this one, or one it can relay to)."""
        if self.linked(node_id):
            return True
        with self.db.read_transaction() as session:
            return node_id in gpuaas.link_holders(session, [node_id])

    def call(self, node_id: str, op: str, args: dict[str, Any], *,
             timeout: float = 15.0, relay: bool = True) -> Any:
        """Ask a node's agent (from a worker thread): over this process's link to it, else
        relayed to the process holding it; 503 with the reason when nobody can."""
        link = self.links.get(node_id)
        if link is None or self.loop is None or link.peer.closed:
            if relay and op in RELAYABLE:
                return self._relay(node_id, op, args, timeout)
            raise ServiceUnavailable(f"node {node_id} is not connected to this API process")
        future = asyncio.run_coroutine_threadsafe(link.peer.call(op, args, timeout=timeout),
                                                  self.loop)
        try:
            return future.result(timeout + 1)
        except ConnectionError as e:
            raise ServiceUnavailable(f"node {node_id}: link lost ({e})") from None
        except TimeoutError:
            raise ServiceUnavailable(f"node {node_id} did not answer in {timeout:.0f}s") \
                from None

    def _relay(self, node_id: str, op: str, args: dict[str, Any], timeout: float) -> Any:
        with self.db.read_transaction() as session:
            holder = gpuaas.link_holders(session, [node_id]).get(node_id)
        if holder is None:
            raise ServiceUnavailable(f"node {node_id} is not connected (its agent has no "
                                     "link to the control plane)")
        if holder.replica_id == self.replica_id or not holder.internal_url:
            raise ServiceUnavailable(f"node {node_id}: its link's API process cannot be "
                                     "reached (no internal_url)")
        at = int(time.time())
        signature = relay_signature(self.secret, node_id, op, at)
        try:
            resp = httpx.post(f"{holder.internal_url.rstrip('/')}/agent/v1/relay",
                              json={"node_id": node_id, "op": op, "args": args},
                              headers={RELAY_HEADER: f"{at}:{signature}"}, timeout=timeout + 2)
        except httpx.HTTPError as e:
            raise ServiceUnavailable(f"node {node_id}: cannot reach the API process holding "
                                     f"its link ({e})") from None
        if resp.status_code != 200:
            raise ServiceUnavailable(f"node {node_id}: relayed request failed (HTTP "
                                     f"{resp.status_code}): {resp.text[:200]}")
        return resp.json()["result"]

    def verify_relay(self, header: str, node_id: str, op: str) -> bool:
        at, _, mac = header.partition(":")
        if not at.isdigit() or abs(time.time() - int(at)) > RELAY_MAX_AGE:
            return False
        return op in RELAYABLE and hmac.compare_digest(
            mac, relay_signature(self.secret, node_id, op, int(at)))
