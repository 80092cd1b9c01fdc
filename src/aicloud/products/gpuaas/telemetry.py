"""GPUaaS metrics: what the node agent collects, what the control plane records from it, and
what a tenant reads back.

Node side: :func:`metrics_workloads` turns the agent's running instances into the
collector's :class:`~aicloud.adapters.metrics.base.WorkloadRef` list; the collector's samples
travel with the heartbeat. Server side: :func:`record_node_metrics` attributes them: a node
may report only on instances placed on it (any other id is dropped), each series is stored
under its instance's scope path.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from aicloud.adapters.metrics.base import WorkloadRef
from aicloud.adapters.providers.base import WorkloadHandle
from aicloud.platform import metrics
from aicloud.products.gpuaas.lifecycle import ON_NODE_STATES
from aicloud.products.gpuaas.models import InstanceEventModel, InstanceModel
from aicloud.products.gpuaas.schemas import InstanceEvent
from aicloud.shared.errors import ValidationFailed

RESOURCE_TYPE = "instance"
MAX_POINTS = 1_500


def metrics_workloads(instances: Iterable[Any], provider_name: str) -> list[WorkloadRef]:
    """The collector's view of running instances (rows or anything with ``id``,
    ``provider``, ``provider_ref`` and ``gpu_indices``)."""
    return [WorkloadRef(resource_id=i.id,
                        handle=WorkloadHandle(i.provider or provider_name,
                                              i.provider_ref or i.id),
                        gpu_indices=tuple(i.gpu_indices or ()))
            for i in instances]


def record_node_metrics(session: Session, node_id: str, samples: Sequence[Any], *,
                        now: datetime) -> metrics.RecordResult:
    """Record one heartbeat's samples of ``node_id`` (the node bound to the caller's
    credential, never one named in the message)."""
    ids = sorted({s["resource_id"] for s in samples
                  if isinstance(s, dict) and isinstance(s.get("resource_id"), str)})
    owners: dict[str, metrics.Owner] = {}
    for i in range(0, len(ids), 500):
        for inst_id, path in session.execute(select(InstanceModel.id, InstanceModel.scope_path)
                                             .where(InstanceModel.id.in_(ids[i:i + 500]),
                                                    InstanceModel.node_id == node_id,
                                                    InstanceModel.state.in_(
                                                        [s.value for s in ON_NODE_STATES]))):
            owners[inst_id] = metrics.Owner(RESOURCE_TYPE, path)
    return metrics.record_samples(session, node_id, samples, owners=owners, now=now)


def instance_metrics(session: Session, inst: InstanceModel, *, start: datetime | None,
                     end: datetime | None, step_seconds: int | None,
                     now: datetime) -> metrics.MetricsOut:
    """An instance's series over [start, end) (default: its last hour, or the hour before it
    ended), in windows of ``step_seconds`` (default: about 120 points)."""
    end = end or min(now, (inst.ended_at or now) + metrics.RESOLUTION)
    start = start or end - timedelta(hours=1)
    if start >= end:
        raise ValidationFailed("'from' must be before 'to'", field="from")
    span = (end - start).total_seconds()
    res = int(metrics.RESOLUTION.total_seconds())
    step = step_seconds or max(res, int(span / 120) // res * res)
    if span / step > MAX_POINTS:
        raise ValidationFailed(f"at most {MAX_POINTS} points per series: widen 'step'",
                               field="step")
    series = metrics.series_of(session, RESOURCE_TYPE, inst.id, start=start, end=end,
                               step=timedelta(seconds=step))
    out = [metrics.SeriesOut(metric=s.metric, unit=s.unit, gpu=s.gpu, source=s.source,
                             simulated=s.source == "simulated",
                             points=[metrics.Point(at=p.at, avg=p.avg, min=p.min, max=p.max,
                                                   count=p.count) for p in s.points])
           for s in series]
    return metrics.MetricsOut(resource_id=inst.id, start=start, end=end, step_seconds=step,
                              simulated=any(s.simulated for s in out), series=out)


def instance_events(session: Session, instance_id: str) -> list[InstanceEvent]:
    return [InstanceEvent(id=e.id, kind=e.kind, message=e.message, details=e.details, at=e.at)
            for e in session.scalars(select(InstanceEventModel).where(
                InstanceEventModel.instance_id == instance_id)
                .order_by(InstanceEventModel.at, InstanceEventModel.id))]
