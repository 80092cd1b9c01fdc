"""Instance metrics over HTTP: the tenant's JSON time series (own instances only), the
operators' per-GPU Prometheus series, and who may set idle policies."""

from __future__ import annotations

from datetime import timedelta

from prometheus_client.parser import text_string_to_metric_families

from aicloud.platform import audit
from aicloud.products import gpuaas
from aicloud.runtime import AppContext
from tests.isolation import admin_client, make_tenant, user_token

ACTOR = audit.Actor.system("test")


def _run_on_node(ctx: AppContext, instance_id: str) -> str:
    """Place and start the instance as the scheduler and its agent would; its node's id."""
    with ctx.db.transaction() as s:
        gpuaas.schedule_pass(s, now=ctx.clock.now())
        m = gpuaas.get_instance_model(s, instance_id, for_update=True)
        for state in (gpuaas.InstanceState.PROVISIONING, gpuaas.InstanceState.RUNNING):
            gpuaas.switch_instance_status(s, m, state, reason="test", actor=ACTOR,
                                          at=ctx.clock.now())
        assert m.node_id is not None
        return m.node_id


def _report(ctx: AppContext, node_id: str, instance_id: str, minutes: int) -> None:
    now = ctx.clock.now()
    samples = [{"resource_id": rid, "at": (now - timedelta(minutes=minutes - k)).isoformat(),
                "cpu_cores": None if rid is None else 0.9,
                "memory_bytes": None if rid is None else 2**28,
                "gpus": [{"index": 0 if rid else 7, "uuid": None, "source": "simulated",
                          "utilization_pct": 90.0 if rid else 0.0,
                          "memory_used_bytes": 2**33, "memory_total_bytes": 80 * 2**30,
                          "power_watts": 600.0, "temperature_c": 70.0 + k}]}
               for k in range(minutes) for rid in (instance_id, None)]
    with ctx.db.transaction() as s:
        result = gpuaas.record_node_metrics(s, node_id, samples, now=now)
    assert result.dropped == 0, result.problems


def test_tenant_series_operator_gauges_and_policy_rights(ctx: AppContext) -> None:
    with admin_client(ctx) as (client, admin):
        a, b = make_tenant(client, admin, "alpha"), make_tenant(client, admin, "beta")
        inst = a.get("instance_id")
        node_id = _run_on_node(ctx, inst)
        _report(ctx, node_id, inst, minutes=10)

        resp = client.get(f"/instances/{inst}/metrics", params={"step": 300},
                          headers=a.headers)
        assert resp.status_code == 200, resp.text
        body = resp.json()
        assert body["simulated"] is True and body["step_seconds"] == 300
        assert set(body) >= {"from", "to", "series"}
        series = {(s["metric"], s["gpu"]): s for s in body["series"]}
        util = series[("gpu_utilization_pct", 0)]
        assert util["source"] == "simulated" and util["unit"] == "percent"
        assert sum(p["count"] for p in util["points"]) == 10
        assert all(p["avg"] == 90.0 for p in util["points"])
        assert series[("cpu_cores", None)]["points"][0]["max"] == 0.9
        # A step that is not a whole number of minutes, a naive time: refused.
        assert client.get(f"/instances/{inst}/metrics", params={"step": 90},
                          headers=a.headers).status_code == 422
        assert client.get(f"/instances/{inst}/metrics", params={"from": "2026-01-01T00:00"},
                          headers=a.headers).status_code == 422
        # Another tenant cannot tell the instance exists.
        assert client.get(f"/instances/{inst}/metrics", headers=b.headers).status_code == 404

        # Operators: one series per physical GPU and metric, labelled by node, GPU, org and
        # project; no instance id anywhere.
        text = client.get("/metrics").text
        assert inst not in text
        families = {f.name: f for f in text_string_to_metric_families(text)}
        util_f = families["aicloud_gpu_utilization_percent"]
        labels = sorted((s.labels["gpu"], s.labels["org"], s.labels["project"], s.value)
                        for s in util_f.samples)
        assert labels == [("0", a.org_id, a.get("project_id"), 90.0),
                          ("7", "", "", 0.0)]
        assert {s.labels["node"] for s in util_f.samples} == {node_id}
        assert {s.labels["source"] for s in util_f.samples} == {"simulated"}
        temps = families["aicloud_gpu_temperature_celsius"].samples
        assert {s.value for s in temps if s.labels["gpu"] == "0"} == {79.0}  # the latest

        # Idle policies: project members read them, project admins set them.
        prj = a.get("project_id")
        member = {"Authorization": "Bearer " + user_token(
            client, admin, "m@alpha.example", prj, "project-member")}
        padmin = {"Authorization": "Bearer " + user_token(
            client, admin, "pa@alpha.example", prj, "project-admin")}
        spec = {"threshold_pct": 5, "idle_minutes": 30, "delete_after_days": 7}
        assert client.put(f"/scopes/{prj}/idle-policies/*", json=spec,
                          headers=member).status_code == 403
        made = client.put(f"/scopes/{prj}/idle-policies/gpu.h100.1x", json=spec,
                          headers=padmin)
        assert made.status_code == 200, made.text
        listed = client.get(f"/scopes/{prj}/idle-policies", headers=member).json()
        assert [(p["instance_type"], p["scope_path"].endswith(prj)) for p in listed] == [
            ("gpu.h100.1x", True)]
        assert client.put(f"/scopes/{prj}/idle-policies/*", json={**spec, "warn_minutes": 30},
                          headers=padmin).status_code == 422
        assert client.delete(f"/scopes/{prj}/idle-policies/gpu.h100.1x",
                             headers=padmin).status_code == 204

