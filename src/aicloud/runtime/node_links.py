"""The node links this API process holds: one per connected agent.

The WebSocket edge (``api/routes/agent_link.py``) authenticates a node and hands its
connection here. Each link gets a GPUaaS gateway bound to the node of its credential; the
ops it serves go through the database, so any replica can serve any node's control path.

One link per node in this process: a new connection of the same node closes the older one
(``CLOSE_REPLACED``). Once a second, for all of its links at once, the hub runs two small
queries: which credentials were revoked (those links are closed with ``CLOSE_REFUSED``
within the second) and a digest of each node's work (a node whose digest moved is sent
``work.changed``, so agents read their work when it changes instead of polling).

Streams (a workload's logs today) go to the replica holding the node's link:
:meth:`NodeLinkHub.call` asks the agent over it. A request that reaches a replica without
the node's link is answered 503 with the reason (relaying between replicas is not built
yet; see docs/architecture.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field
from typing import Any

import anyio.to_thread

from aicloud.products import gpuaas
from aicloud.shared.clock import Clock
from aicloud.shared.db import Database
from aicloud.shared.errors import AppError, ServiceUnavailable
from aicloud.shared.link import CLOSE_REFUSED, CLOSE_REPLACED, Channel, Peer, Transport
from aicloud.shared.link.rpc import OpError

log = logging.getLogger(__name__)


@dataclass
class _Link:
    identity: gpuaas.NodeIdentity
    peer: Peer
    version: str | None = None


@dataclass
class NodeLinkHub:
    db: Database
    clock: Clock
    check_interval: float = 1.0
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
        old = self.links.get(identity.node_id)
        self.links[identity.node_id] = _Link(identity, peer)
        if old is not None:
            await old.peer.close(CLOSE_REPLACED, "a newer link of this node took over")
        if self._monitor is None or self._monitor.done():
            self._monitor = asyncio.create_task(self._watch())
        log.info("node %s linked (credential %s)", identity.node_id, identity.credential_id)
        try:
            await peer.run()
        finally:
            if self.links.get(identity.node_id) is not None and \
                    self.links[identity.node_id].peer is peer:
                del self.links[identity.node_id]
            log.info("node %s unlinked", identity.node_id)

    async def _watch(self) -> None:
        while self.links:
            await asyncio.sleep(self.check_interval)
            current = dict(self.links)
            try:
                revoked, versions = await anyio.to_thread.run_sync(self._check, current)
            except Exception:
                log.exception("node links: checking credentials and work failed")
                continue
            for node_id, link in current.items():
                if link.identity.credential_id in revoked:
                    await link.peer.close(CLOSE_REFUSED, "node credential revoked")
                    continue
                version = versions.get(node_id)
                if link.version is not None and version != link.version:
                    with contextlib.suppress(ConnectionError):
                        await link.peer.push("work.changed")
                link.version = version

    def _check(self, links: dict[str, _Link]) -> tuple[set[str], dict[str, str]]:
        with self.db.read_transaction() as session:
            revoked = gpuaas.revoked_among(
                session, [link.identity.credential_id for link in links.values()])
            return revoked, gpuaas.work_versions(session, list(links))

    async def open_stream(self, node_id: str, kind: str, args: dict[str, Any]) -> Channel:
        """A byte stream from (and to) a node's agent, e.g. ``logs`` of a workload; on the
        loop of this process's links. 503 when this process has no link to the node."""
        link = self.links.get(node_id)
        if link is None or link.peer.closed:
            raise ServiceUnavailable(f"node {node_id} is not connected to this API process")
        return await link.peer.open_channel(kind, args)

    def linked(self, node_id: str) -> bool:
        link = self.links.get(node_id)
        return link is not None and not link.peer.closed

    def call(self, node_id: str, op: str, args: dict[str, Any], *,
             timeout: float = 15.0) -> Any:
        """Ask a node's agent (from a worker thread); 503 when this process has no link to
        it."""
        link = self.links.get(node_id)
        if link is None or self.loop is None or link.peer.closed:
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
