"""The node operations as JSON: what ``LinkNodeStore`` sends and the gateway reads.

Plain mappings of the dataclasses of ``node_store.py``; datetimes as ISO 8601 with their
offset. Parsing is strict (a missing or mistyped field is a ``ValueError``): the gateway
answers it as a bad request, never as a partial write.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from aicloud.products.gpuaas.node_store import (
    Beat,
    End,
    LeftoverCheck,
    Meter,
    Provisioning,
    Running,
    Step,
    StepResult,
    Stopping,
    WorkItem,
)
from aicloud.products.gpuaas.nodes import GpuReport, NodeReport
from aicloud.products.gpuaas.schemas import NodeInventory
from aicloud.shared.leases import Lease

MAX_STR = 4096


def dt(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def parse_dt(value: Any) -> datetime:
    if not isinstance(value, str) or len(value) > 64:
        raise ValueError("expected an ISO 8601 date-time")
    out = datetime.fromisoformat(value)
    if out.tzinfo is None:
        raise ValueError("a date-time needs its UTC offset")
    return out


def opt_dt(value: Any) -> datetime | None:
    return None if value is None else parse_dt(value)


def string(value: Any, *, limit: int = MAX_STR) -> str:
    if not isinstance(value, str) or len(value) > limit:
        raise ValueError(f"expected a string of at most {limit} characters")
    return value


def opt_string(value: Any, *, limit: int = MAX_STR) -> str | None:
    return None if value is None else string(value, limit=limit)


def strings(value: Any, *, limit: int = 10_000) -> list[str]:
    if not isinstance(value, list) or len(value) > limit:
        raise ValueError(f"expected a list of at most {limit} strings")
    return [string(v, limit=256) for v in value]


# --- node report ------------------------------------------------------------------------

def report_out(report: NodeReport) -> dict[str, Any]:
    return {"name": report.name, "inventory_source": report.inventory_source,
            "simulated": report.simulated, "labels": dict(report.labels),
            "gpus": [{"index": g.index, "model": g.model, "name": g.name,
                      "memory_gib": g.memory_gib, "uuid": g.uuid, "healthy": g.healthy,
                      "health_detail": g.health_detail} for g in report.gpus]}


def report_in(data: Any) -> NodeReport:
    inv = NodeInventory.model_validate(data)  # bounded sizes and a host name's shape
    return report_of(inv)


def report_of(inv: NodeInventory) -> NodeReport:
    return NodeReport(name=inv.name, inventory_source=inv.inventory_source,
                      simulated=inv.simulated, labels=dict(inv.labels),
                      gpus=tuple(GpuReport(index=g.index, model=g.model, name=g.name,
                                           memory_gib=g.memory_gib, uuid=g.uuid,
                                           healthy=g.healthy, health_detail=g.health_detail)
                                 for g in inv.gpus))


# --- leases -----------------------------------------------------------------------------

def lease_out(lease: Lease) -> dict[str, Any]:
    return {"id": lease.row_id, "token": lease.token, "owner": lease.owner,
            "expires_at": dt(lease.expires_at)}


def lease_in(data: Any) -> Lease:
    if not isinstance(data, dict):
        raise ValueError("expected a lease object")
    return Lease(row_id=string(data.get("id"), limit=64), token=string(data.get("token"),
                                                                        limit=64),
                 owner=string(data.get("owner"), limit=128),
                 expires_at=parse_dt(data.get("expires_at")))


def leases_in(data: Any) -> list[Lease]:
    if not isinstance(data, list) or len(data) > 100_000:
        raise ValueError("expected a list of leases")
    return [lease_in(d) for d in data]


# --- results ----------------------------------------------------------------------------

def beat_out(beat: Beat) -> dict[str, Any]:
    return {"node_id": beat.node_id, "kept": [lease_out(x) for x in beat.kept],
            "metered": beat.metered, "metrics": {
                "values": beat.metric_values, "dropped": beat.metrics_dropped,
                "problems": list(beat.metrics_problems)}}


def beat_in(data: dict[str, Any]) -> Beat:
    # A control plane that predates metrics answers without them.
    m = data.get("metrics") or {}
    return Beat(node_id=string(data["node_id"], limit=64), kept=tuple(leases_in(data["kept"])),
                metered=int(data["metered"]), metric_values=int(m.get("values", 0)),
                metrics_dropped=int(m.get("dropped", 0)),
                metrics_problems=tuple(str(p) for p in m.get("problems", ())))


def item_out(w: WorkItem) -> dict[str, Any]:
    return {"id": w.id, "state": w.state, "template": w.template, "gpu_count": w.gpu_count,
            "gpu_model": w.gpu_model, "gpu_indices": list(w.gpu_indices),
            "command": list(w.command) if w.command is not None else None,
            "provider": w.provider, "provider_ref": w.provider_ref,
            "stop_requested": w.stop_requested, "stop_reason": w.stop_reason,
            "last_metered_at": dt(w.last_metered_at), "lock_token": w.lock_token,
            "lock_expires_at": dt(w.lock_expires_at)}


def item_in(d: dict[str, Any]) -> WorkItem:
    return WorkItem(id=d["id"], state=d["state"], template=d["template"],
                    gpu_count=int(d["gpu_count"]), gpu_model=d["gpu_model"],
                    gpu_indices=tuple(int(i) for i in d["gpu_indices"]),
                    command=tuple(d["command"]) if d["command"] is not None else None,
                    provider=d["provider"], provider_ref=d["provider_ref"],
                    stop_requested=bool(d["stop_requested"]), stop_reason=d["stop_reason"],
                    last_metered_at=opt_dt(d["last_metered_at"]), lock_token=d["lock_token"],
                    lock_expires_at=opt_dt(d["lock_expires_at"]))


def step_out(step: Step) -> dict[str, Any]:
    if isinstance(step, Provisioning):
        return {"kind": "provisioning", "provider": step.provider}
    if isinstance(step, Running):
        return {"kind": "running", "provider": step.provider, "ref": step.ref,
                "endpoint": step.endpoint, "started_at": dt(step.started_at)}
    if isinstance(step, Stopping):
        return {"kind": "stopping"}
    if isinstance(step, Meter):
        return {"kind": "meter", "until": dt(step.until)}
    return {"kind": "end", "state": step.state, "reason": step.reason, "at": dt(step.at),
            "exit_code": step.exit_code}


def step_in(d: Any) -> Step:
    if not isinstance(d, dict):
        raise ValueError("expected a step object")
    kind = d.get("kind")
    if kind == "provisioning":
        return Provisioning(provider=string(d.get("provider"), limit=32))
    if kind == "running":
        return Running(provider=string(d.get("provider"), limit=32),
                       ref=string(d.get("ref"), limit=1024),
                       endpoint=opt_string(d.get("endpoint"), limit=512),
                       started_at=parse_dt(d.get("started_at")))
    if kind == "stopping":
        return Stopping()
    if kind == "meter":
        return Meter(until=parse_dt(d.get("until")))
    if kind == "end":
        code = d.get("exit_code")
        if code is not None and (not isinstance(code, int) or isinstance(code, bool)):
            raise ValueError("exit_code must be an integer or null")
        return End(state=string(d.get("state"), limit=16), reason=string(d.get("reason"),
                                                                         limit=512),
                   at=parse_dt(d.get("at")), exit_code=code)
    raise ValueError(f"unknown step kind {kind!r}")


def step_result_out(r: StepResult) -> dict[str, Any]:
    return {"applied": r.applied, "released": r.released}


def step_result_in(d: dict[str, Any]) -> StepResult:
    return StepResult(applied=bool(d["applied"]), released=bool(d["released"]))


def leftovers_out(c: LeftoverCheck) -> dict[str, Any]:
    return {"was_down": c.was_down, "verdicts": dict(c.verdicts)}


def leftovers_in(d: dict[str, Any]) -> LeftoverCheck:
    return LeftoverCheck(was_down=bool(d["was_down"]), verdicts=dict(d["verdicts"]))
