"""Two API processes (two apps, each with its own links, on one database): a node's logs
are served by either (the one without its link relays to the holder), and a node has one
link in the whole control plane (a newer link on another process closes the older one)."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from aicloud.adapters.providers.local.provider import LocalProvider
from aicloud.platform import audit, iam
from aicloud.products import gpuaas
from aicloud.runtime import build_context, node_agent
from aicloud.runtime.node_links import RELAY_HEADER, relay_signature
from aicloud.shared.clock import FakeClock
from aicloud.shared.db import Database
from aicloud.shared.link import CLOSE_REPLACED
from tests.conftest import LiveServer, make_settings
from tests.products.gpuaas.world import h100s, make_world

PASSWORD = "correct horse battery"


def _until(cond, timeout: float = 30.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)


def test_logs_through_either_process_and_one_link_per_node(db: Database,
                                                            tmp_path: Path) -> None:
    w = make_world(db)
    w.clock = FakeClock(datetime.now(UTC))
    one = build_context(make_settings(db), db)
    two = build_context(make_settings(db), db)
    with db.transaction() as s:
        iam.bootstrap_admin(s, email="root@example.org", password=PASSWORD)
        token = gpuaas.create_join_token(s, expires_in=timedelta(hours=1), max_uses=1,
                                         description="t", actor=audit.Actor.system("t"),
                                         now=datetime.now(UTC)).token
    with LiveServer(one) as s1, LiveServer(two) as s2:
        one.node_links.internal_url, two.node_links.internal_url = s1.url, s2.url
        report = gpuaas.NodeReport(name="node-a", inventory_source="static", simulated=True,
                                   gpus=h100s(2))
        creds, _ = node_agent.credentials_for(s1.url, token, tmp_path / "state", report)
        linked = node_agent.build_linked_agent(one.settings, creds, one.clock,
                                               provider=LocalProvider(tmp_path / "wl"))
        linked.agent.report = lambda: report
        linked.link.start()
        try:
            assert linked.link.wait_connected(10)
            linked.agent.heartbeat()
            inst = w.launch("out", template="batch", command=["python3", "-c", "print(42)"])
            w.schedule()
            _until(lambda: linked.agent.reconcile_once() >= 0
                   and w.get(inst.id).state == "succeeded")
            with db.transaction() as s:
                [holder] = gpuaas.link_holders(s, [creds.node_id]).values()
            assert holder.replica_id == one.node_links.replica_id
            assert not two.node_links.linked(creds.node_id)
            for server in (s1, s2):  # the second relays to the first
                with httpx.Client(base_url=server.url, timeout=20) as http:
                    login = http.post("/auth/login", json={"email": "root@example.org",
                                                           "password": PASSWORD})
                    http.headers["Authorization"] = f"Bearer {login.json()['token']}"
                    resp = http.get(f"/instances/{inst.id}/logs")
                assert resp.status_code == 200, resp.text
                assert resp.json()["data"].startswith("42\n"), (server.url, resp.json())
            # A relay request that is not signed with the platform's secret is refused.
            body = {"node_id": creds.node_id, "op": "logs.read",
                    "args": {"provider": "local", "ref": inst.id, "offset": 0}}
            at, secret = int(time.time()), one.settings.secret_key.get_secret_value()
            old = relay_signature(secret, creds.node_id, "logs.read", at - 3600)
            wrong = relay_signature("wrong secret", creds.node_id, "logs.read", at)
            for header in ("", f"{at}:{'0' * 64}", f"{at - 3600}:{old}", f"{at}:{wrong}"):
                resp = httpx.post(f"{s1.url}/agent/v1/relay", json=body,
                                  headers={RELAY_HEADER: header})
                assert resp.status_code == 401, (header, resp.text)
            good = relay_signature(secret, creds.node_id, "node.work", at)
            resp = httpx.post(f"{s1.url}/agent/v1/relay", json={**body, "op": "node.work"},
                              headers={RELAY_HEADER: f"{at}:{good}"})
            assert resp.status_code == 401  # only relayable ops, whatever the signature

            # Another link of the node, on the second process: the first process closes the
            # agent's link within about a second; the agent reconnects (to the first), and
            # then the second process closes the other link.
            async def other_link() -> tuple[int | None, float]:
                async with connect(node_agent.link_url(s2.url), additional_headers={
                        "Authorization": f"Bearer {creds.credential}"}) as ws:
                    t0 = time.monotonic()
                    try:
                        while True:
                            await asyncio.wait_for(ws.recv(), 15)
                    except ConnectionClosed:
                        pass
                    return ws.close_code, time.monotonic() - t0
            connects = linked.link.connects
            code, held = asyncio.run(other_link())
            assert code == CLOSE_REPLACED and held < 10
            assert linked.link.connects > connects  # the agent's link was replaced, came back
            _until(lambda: one.node_links.linked(creds.node_id))
        finally:
            linked.link.stop()
            provider = LocalProvider(tmp_path / "wl")
            for handle in provider.list_workloads():
                try:
                    provider.stop(handle, grace_seconds=0)
                except Exception:
                    pass
