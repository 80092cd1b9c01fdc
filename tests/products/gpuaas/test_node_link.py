"""The node agent over its link, against the real API on a real socket: join, run an
instance through RPCs only, read its logs through the link, refuse what a node may not do
(another node's instances, forged leases, malformed ops), close a revoked node's link."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from aicloud.adapters.providers.base import WorkloadHandle
from aicloud.adapters.providers.local.provider import LocalProvider
from aicloud.platform import audit
from aicloud.products import gpuaas
from aicloud.products.gpuaas import node_wire
from aicloud.runtime import AppContext, build_context, node_agent
from aicloud.shared.clock import FakeClock
from aicloud.shared.db import Database
from aicloud.shared.link import CLOSE_REFUSED, CLOSE_TOO_BIG, LinkRefused, RemoteError
from tests.conftest import LiveServer, make_settings
from tests.isolation import admin_client
from tests.products.gpuaas.world import World, h100s, make_world

ADMIN = audit.Actor.system("test")


def gpuaas_handle(ref: str) -> WorkloadHandle:
    return WorkloadHandle("local", ref)


def _token(ctx: AppContext, uses: int = 1) -> str:
    with ctx.db.transaction() as s:
        return gpuaas.create_join_token(s, expires_in=timedelta(hours=1), max_uses=uses,
                                        description="t", actor=ADMIN, now=ctx.clock.now()).token


def _report(name: str) -> gpuaas.NodeReport:
    return gpuaas.NodeReport(name=name, inventory_source="static", simulated=True,
                             gpus=h100s(2), labels={"simulated": "true"})


@dataclass
class Linked:
    agent: gpuaas.NodeAgent
    linked: node_agent.LinkedAgent
    root: Path


@pytest.fixture
def world(sqlite_db: Database) -> Iterator[tuple[World, AppContext, LiveServer]]:
    w = make_world(sqlite_db)
    w.clock = FakeClock(datetime.now(UTC))  # the API below uses the real clock
    ctx = build_context(make_settings(sqlite_db), sqlite_db)
    with LiveServer(ctx) as server:
        yield w, ctx, server


def _join(ctx: AppContext, server: LiveServer, tmp: Path, name: str) -> Linked:
    creds, joined = node_agent.credentials_for(server.url, _token(ctx), tmp / name / "state",
                                               _report(name))
    assert joined
    settings = ctx.settings
    provider = LocalProvider(tmp / name / "wl")
    linked = node_agent.build_linked_agent(settings, creds, ctx.clock, provider=provider,
                                           node_name=name)
    linked.agent.report = lambda: _report(name)
    linked.agent.stop_grace_seconds = 1
    linked.link.start()
    assert linked.link.wait_connected(10)
    return Linked(linked.agent, linked, tmp / name / "wl")


def _kill_workloads(root: Path) -> None:
    """Whatever a failed test left running (a passing one stopped it already)."""
    provider = LocalProvider(root)
    for handle in provider.list_workloads():
        try:
            provider.stop(handle, grace_seconds=0)
        except Exception:
            pass


def _until(cond, timeout: float = 20.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)


def test_an_instance_runs_and_stops_through_the_link_only(world, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    w, ctx, server = world
    a = _join(ctx, server, tmp_path, "node-a")
    try:
        a.agent.heartbeat()
        inst = w.launch("job", command=None)
        w.schedule()
        assert w.get(inst.id).node_id == a.linked.credentials.node_id
        _until(lambda: a.agent.reconcile_once() >= 0 and w.get(inst.id).state == "running")
        # Logs are read from the node over its link (the API has no files of it).
        logs = ctx.node_links.call(a.linked.credentials.node_id, "logs.read", {
            "provider": "local", "ref": inst.id, "offset": 0, "tail_lines": None})
        assert set(logs) == {"data", "offset", "next_offset", "complete"}
        # Idle: the work list is not read again on every pass. (The agent's own writes
        # moved the node's digest: the notice of that arrives within a second, read once.)
        time.sleep(1.5)
        a.agent.reconcile_once()
        reads = a.linked.store.reads
        for _ in range(10):
            a.agent.reconcile_once()
            time.sleep(0.1)
        assert a.linked.store.reads == reads
        w.stop(inst.id)  # the gateway notices the change and tells the agent
        _until(lambda: a.agent.reconcile_once() >= 0 and w.get(inst.id).state == "stopped")
    finally:
        a.linked.link.stop()
        _kill_workloads(a.root)


def test_logs_come_from_the_node_over_its_link(world, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """The API process has none of the node's files: GET .../logs (offsets, tail) and a
    followed stream (a channel, paced by its credit window) read them from the agent."""
    w, ctx, server = world
    a = _join(ctx, server, tmp_path, "node-a")
    assert Path(ctx.settings.providers.local_root) != a.root
    from aicloud.platform import iam

    with ctx.db.transaction() as s:
        iam.bootstrap_admin(s, email="root@example.org", password="correct horse battery")
    http = httpx.Client(base_url=server.url, timeout=10)
    token = http.post("/auth/login", json={"email": "root@example.org",
                                           "password": "correct horse battery"}).json()["token"]
    http.headers["Authorization"] = f"Bearer {token}"
    try:
        a.agent.heartbeat()
        lines = 40_000  # ~290 KB: more than one credit window and one read
        inst = w.launch("out", template="batch", command=[
            "python3", "-c", f"import sys\nfor i in range({lines}): print('line', i)"])
        w.schedule()
        _until(lambda: a.agent.reconcile_once() >= 0 and w.get(inst.id).state == "succeeded",
               timeout=60)
        # The workload's output, then what the provider adds (how it ended): the whole file.
        expected = LocalProvider(a.root).logs(gpuaas_handle(inst.id), offset=0,
                                              limit=1 << 30).data
        assert expected.startswith("".join(f"line {i}\n" for i in range(lines)).encode())
        got, offset = b"", 0
        while True:
            resp = http.get(f"/instances/{inst.id}/logs", params={"offset": offset})
            assert resp.status_code == 200, resp.text
            chunk = resp.json()
            assert chunk["offset"] == offset
            got += chunk["data"].encode()
            offset = chunk["next_offset"]
            if chunk["complete"]:
                break
        assert got == expected
        tail = http.get(f"/instances/{inst.id}/logs", params={"tail_lines": 2}).json()
        assert tail["data"].encode() == b"\n".join(expected.split(b"\n")[-3:])

        async def follow() -> bytes:
            channel = await ctx.node_links.open_stream(
                a.linked.credentials.node_id, "logs", {"provider": "local", "ref": inst.id,
                                                       "offset": 0})
            out = bytearray()
            while chunk := await channel.read():
                out += chunk
            return bytes(out)
        streamed = asyncio.run_coroutine_threadsafe(follow(), ctx.node_links.loop).result(30)
        assert streamed == expected
    finally:
        http.close()
        a.linked.link.stop()
        _kill_workloads(a.root)


def test_a_node_cannot_read_or_act_on_another_nodes_instances(world, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    w, ctx, server = world
    a = _join(ctx, server, tmp_path, "node-a")
    b = _join(ctx, server, tmp_path, "node-b")
    try:
        a.agent.heartbeat()
        b.agent.heartbeat()
        inst = w.launch("mine")
        w.schedule()
        owner, other = (a, b) if w.get(inst.id).node_id == a.linked.credentials.node_id \
            else (b, a)
        _until(lambda: owner.agent.reconcile_once() >= 0 and w.get(inst.id).state == "running")
        lease = owner.agent._held[inst.id]
        call = other.linked.link.call
        assert inst.id not in {x["id"] for x in call("node.work", {})}
        assert call("node.claim", {"ids": [inst.id], "owner": "x", "ttl_seconds": 30}) == []
        forged = {"id": inst.id, "token": lease.token, "owner": lease.owner,
                  "expires_at": lease.expires_at.isoformat()}
        for step in ({"kind": "stopping"},
                     {"kind": "end", "state": "failed", "reason": "x",
                      "at": datetime.now(UTC).isoformat(), "exit_code": 1},
                     {"kind": "meter", "until": datetime.now(UTC).isoformat()}):
            out = call("node.step", {"lease": forged, "step": step})
            assert out == {"applied": False, "released": True}
        assert call("node.release", {"held": [forged]}) == 0
        beat = call("node.heartbeat", {
            "report": gpuaas.report_out(_report("node-x")), "held": [forged],
            "ttl_seconds": 30, "now": datetime.now(UTC).isoformat(),
            "meter_before": (datetime.now(UTC) + timedelta(hours=1)).isoformat()})
        assert beat["kept"] == [] and beat["node_id"] == other.linked.credentials.node_id
        verdicts = call("node.leftovers", {"refs": [inst.id]})["verdicts"]
        assert verdicts == {inst.id: "forget"}  # nothing of this node: says nothing more
        # The other node's heartbeat named "node-x": the node keeps its joined name.
        with ctx.db.transaction() as s:
            names = {n.name for n in gpuaas.list_nodes(s)}
        assert "node-x" not in names
        assert w.get(inst.id).state == "running"
        # Malformed ops are refused without effect.
        for op, args in (("node.step", {"lease": forged, "step": {"kind": "end",
                                                                   "state": "running",
                                                                   "reason": "x",
                                                                   "at": "2020-01-01"}}),
                         ("node.claim", {"ids": "all"}), ("node.drop_tables", {}),
                         ("node.step", {"lease": forged, "step": {"kind": "end",
                                                                   "state": "running",
                                                                   "reason": "x", "at":
                                                                   datetime.now(UTC)
                                                                   .isoformat()}})):
            with pytest.raises(RemoteError) as err:
                call(op, args)
            assert err.value.type == "bad-request" and not err.value.temporary, err.value
    finally:
        a.linked.link.stop()
        b.linked.link.stop()
        _kill_workloads(a.root)
        _kill_workloads(b.root)


def test_revoked_unauthenticated_garbage_and_oversized_links_are_refused(
        world, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    w, ctx, server = world
    a = _join(ctx, server, tmp_path, "node-a")
    url = node_agent.link_url(server.url)
    credential = a.linked.credentials.credential

    async def closed_with(headers: dict[str, str], send: str | bytes | None = None
                          ) -> tuple[int | None, str]:
        async with connect(url, additional_headers=headers, max_size=None) as ws:
            if send is not None:
                await ws.send(send)
            try:
                while True:
                    await asyncio.wait_for(ws.recv(), 10)
            except ConnectionClosed:
                pass
            return ws.close_code, ws.close_reason

    try:
        code, reason = asyncio.run(closed_with({}))
        assert code == CLOSE_REFUSED and "bearer" in reason
        code, reason = asyncio.run(closed_with({"Authorization": "Bearer aicnc_nope"}))
        assert code == CLOSE_REFUSED and "unknown" in reason
        auth = {"Authorization": f"Bearer {credential}"}
        # Each of these replaces the agent's link (one link per node), then is closed.
        assert asyncio.run(closed_with(auth, "not json"))[0] == 1002
        assert asyncio.run(closed_with(auth, json.dumps({"id": "1", "op": "x"})))[0] == 1002
        assert asyncio.run(closed_with(auth, b"\x00"))[0] == 1002
        assert asyncio.run(closed_with(auth, "x" * (2 << 20)))[0] == CLOSE_TOO_BIG
        assert asyncio.run(closed_with(auth, b"\x00\x00\x00\x01" + b"x" * 100_000))[0] \
            == CLOSE_TOO_BIG
        # The agent's client reconnects by itself after each of those replaced it.
        _until(lambda: a.linked.link.peer is not None and not a.linked.link.peer.closed)
        # Revocation: the live link is closed within about a second, and stays refused.
        with admin_client(ctx) as (client, token):
            resp = client.post(f"/nodes/{a.linked.credentials.node_id}/revoke",
                               headers={"Authorization": f"Bearer {token}"}, json={})
            assert resp.status_code == 200, resp.text
        t0 = time.monotonic()
        _until(lambda: a.linked.link.refused is not None, timeout=5)
        assert time.monotonic() - t0 < 2.5
        assert "revoked" in a.linked.link.refused
        with pytest.raises(LinkRefused):
            a.linked.link.call("node.work", {})
        code, reason = asyncio.run(closed_with(auth))
        assert code == CLOSE_REFUSED and "revoked" in reason
        assert httpx.post(f"{server.url}/agent/v1/credential/rotate",
                          headers=auth).status_code == 401
    finally:
        a.linked.link.stop()
    del w


def _admin_http(ctx: AppContext, server: LiveServer) -> httpx.Client:
    from aicloud.platform import iam

    with ctx.db.transaction() as s:
        iam.bootstrap_admin(s, email="root@example.org", password="correct horse battery")
    http = httpx.Client(base_url=server.url, timeout=10)
    token = http.post("/auth/login", json={"email": "root@example.org",
                                           "password": "correct horse battery"}).json()["token"]
    http.headers["Authorization"] = f"Bearer {token}"
    return http


def _points(http: httpx.Client, instance_id: str) -> dict[tuple[str, int | None], int]:
    resp = http.get(f"/instances/{instance_id}/metrics")
    assert resp.status_code == 200, resp.text
    body = resp.json()
    return {(s["metric"], s["gpu"]): sum(p["count"] for p in s["points"])
            for s in body["series"]} | ({("simulated", None): 1} if body["simulated"] else {})


def test_heartbeats_carry_metrics_of_the_nodes_own_instances_only(world, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """The agent's collector (the simulated GPUs of the dev profile, the local provider's CPU
    and memory) reports through the link's heartbeat; the tenant's series show it, marked
    simulated. Samples another node forges about this instance are dropped, and a report
    the control plane refuses as a whole still renews the leases of the heartbeat."""
    w, ctx, server = world
    a = _join(ctx, server, tmp_path, "node-a")
    b = _join(ctx, server, tmp_path, "node-b")
    http = _admin_http(ctx, server)
    try:
        assert a.agent.metrics is not None  # the composition root gave it a collector
        a.agent.heartbeat()
        b.agent.heartbeat()
        inst = w.launch("busy", command=["python3", "-c", "while True: pass"])
        w.schedule()
        owner, other = (a, b) if w.get(inst.id).node_id == a.linked.credentials.node_id \
            else (b, a)
        _until(lambda: owner.agent.reconcile_once() >= 0 and w.get(inst.id).state == "running")
        assert _points(http, inst.id) == {}
        owner.agent.reconcile_once()  # the pass that reads it running
        owner.agent.heartbeat()
        time.sleep(0.3)
        owner.agent.heartbeat()  # CPU is a rate: it needs two readings
        got = _points(http, inst.id)
        gpu = (w.get(inst.id).gpu_indices or [None])[0]
        assert got[("simulated", None)] == 1
        assert got[("gpu_utilization_pct", gpu)] == 2 and got[("cpu_cores", None)] == 1, got
        assert got[("memory_bytes", None)] == 2, got

        # The other node forges a sample about this instance: dropped, nothing recorded.
        at = datetime.now(UTC).isoformat()
        forged = {"resource_id": inst.id, "at": at, "cpu_cores": 64.0, "memory_bytes": 1,
                  "gpus": [{"index": 0, "uuid": None, "source": "simulated",
                            "utilization_pct": 0.0, "memory_used_bytes": 0,
                            "memory_total_bytes": 80 * 2**30, "power_watts": 1.0,
                            "temperature_c": 20.0}]}
        beat = other.linked.link.call("node.heartbeat", {
            "report": gpuaas.report_out(_report("x")), "held": [], "ttl_seconds": 30,
            "now": at, "meter_before": at, "samples": [forged]})
        assert beat["metrics"]["values"] == 0 and beat["metrics"]["dropped"] == 1, beat
        assert "not one this node runs" in beat["metrics"]["problems"][0]
        assert _points(http, inst.id) == got

        # A report refused as a whole (not a list of samples, or a sample that is not an
        # object) costs the heartbeat nothing: the lease is renewed, the node refreshed.
        lease = owner.agent._held[inst.id]
        for samples in ("junk", [42]):
            beat = owner.linked.link.call("node.heartbeat", {
                "report": gpuaas.report_out(_report("x")), "held": [node_wire.lease_out(lease)],
                "ttl_seconds": 30, "now": datetime.now(UTC).isoformat(),
                "meter_before": at, "samples": samples})
            assert [x["id"] for x in beat["kept"]] == [inst.id], beat
            assert beat["metrics"]["values"] == 0
        assert _points(http, inst.id) == got
        w.stop(inst.id)
        _until(lambda: owner.agent.reconcile_once() >= 0 and w.get(inst.id).state == "stopped")
    finally:
        http.close()
        a.linked.link.stop()
        b.linked.link.stop()
        _kill_workloads(a.root)
        _kill_workloads(b.root)
