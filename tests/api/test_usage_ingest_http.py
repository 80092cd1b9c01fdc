"""POST /usage over a real socket, as reporters send it: 1,000-record bodies validated from
their bytes, replays recognised on the optimistic insert's careful path, and every refusal a
clear 4xx that stores nothing."""

from __future__ import annotations

import json
from typing import Any

import httpx

from tests.api.billing_world import World
from tests.conftest import LiveServer

WINDOW = {"window_start": "2026-01-01T00:00:00Z", "window_end": "2026-01-01T00:01:00Z"}


def _records(w: World, tag: str, n: int) -> list[dict[str, Any]]:
    a = w.alpha
    dep, prj = a.get("department_id"), a.get("project_id")
    return [{"resource_id": f"inst_{i % 7}", "project_id": prj,
             "scope_path": f"/{a.org_id}/{dep}/{prj}", "meter": "gpu_seconds",
             "dimension_value": "H100", "quantity": 60 + i, "idempotency_key": f"{tag}-{i}",
             **WINDOW} for i in range(n)]


def _count(w: World) -> int:
    with w.ctx.db.engine.connect() as c:
        return int(c.exec_driver_sql("SELECT count(*) FROM billing_usage_records").scalar() or 0)


def test_usage_batches_over_http(billing_world: World) -> None:
    w = billing_world
    records = _records(w, "h", 1000)
    with LiveServer(w.ctx) as server, httpx.Client(
            base_url=server.url, headers={"Authorization": f"Bearer {w.admin}"},
            timeout=60) as client:
        def post(body: Any, content_type: str = "application/json") -> httpx.Response:
            return client.post("/usage", content=json.dumps(body).encode(),
                               headers={"Content-Type": content_type})

        first = post({"records": records})
        assert first.status_code == 200, first.text
        stored = first.json()
        assert (stored["accepted"], stored["duplicates"]) == (1000, 0)
        assert len(set(stored["ids"])) == 1000 and _count(w) == 1000
        # A replay: the optimistic insert clashes, the careful path answers the same ids.
        again = post({"records": records})
        assert again.status_code == 200 and again.json() == {**stored, "accepted": 0,
                                                             "duplicates": 1000}
        # Old and new keys together: only the new one is stored.
        mixed = post({"records": [*records[:999], *_records(w, "new", 1)]})
        assert mixed.status_code == 200
        assert (mixed.json()["accepted"], mixed.json()["duplicates"]) == (1, 999)
        assert mixed.json()["ids"][:999] == stored["ids"][:999]
        # An old key with another payload: 409, nothing of the batch stored.
        changed = [*_records(w, "other", 5), {**records[3], "quantity": 1}]
        assert post({"records": changed}).status_code == 409
        assert _count(w) == 1001
        # A bad record is a 422 naming it, in FastAPI's shape; nothing is stored.
        bad = [*_records(w, "bad", 10)]
        bad[7] = {**bad[7], "quantity": "60"}
        resp = post({"records": bad})
        assert resp.status_code == 422
        assert resp.headers["content-type"].startswith("application/problem+json")
        assert resp.json()["errors"][0]["loc"] == ["body", "records", 7, "quantity"]
        # Not JSON, or not declared as JSON (the strict-JSON check would not have run on
        # it: duplicate keys must not slip through a text/plain body).
        assert client.post("/usage", content=b"{", headers={
            "Content-Type": "application/json"}).status_code == 422
        dup = b'{"records": [], "records": ' + json.dumps(_records(w, "dup", 1)).encode() + b"}"
        assert client.post("/usage", content=dup, headers={
            "Content-Type": "application/json"}).status_code == 422
        assert client.post("/usage", content=dup, headers={
            "Content-Type": "text/plain"}).status_code == 422
        assert post({"records": []}).status_code == 422
        assert _count(w) == 1001
        # Authorization comes before the body is read: no key is a 401, a tenant is a 403.
        assert httpx.post(server.url + "/usage", content=b"{",
                          headers={"Content-Type": "application/json"}).status_code == 401
        assert client.post("/usage", content=json.dumps({"records": records}).encode(),
                           headers={"Content-Type": "application/json",
                                    "Authorization": f"Bearer {w.alpha.token}"}
                           ).status_code in (403, 404)
    assert _count(w) == 1001
