"""GPU instances' metrics (time series) and events, for the tenants who may read them."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Query

from aicloud.api.authz import Authorize, Caller, path_param
from aicloud.api.deps import Context, RequestRoute
from aicloud.platform import metrics
from aicloud.products import gpuaas
from aicloud.shared.errors import ValidationFailed

router = APIRouter(tags=["gpuaas: instances"], route_class=RequestRoute)

INST = path_param("instance_id")


def _aware(value: datetime | None, name: str) -> datetime | None:
    if value is not None and value.tzinfo is None:
        raise ValidationFailed(f"'{name}' needs a time zone (e.g. ...Z)", field=name)
    return value


@router.get("/instances/{instance_id}/metrics", response_model=metrics.MetricsOut,
            response_model_by_alias=True)
def instance_metrics(
    instance_id: str, ctx: Context,
    caller: Annotated[Caller, Authorize("gpuaas.instances.read", scope=INST)],
    start: Annotated[datetime | None, Query(alias="from",
                                            description="Default: an hour before 'to'")] = None,
    end: Annotated[datetime | None, Query(alias="to",
                                          description="Default: now (or the instance's end)"
                                          )] = None,
    step: Annotated[int | None, Query(ge=60, le=86_400,
                                      description="Window in seconds, a multiple of 60; "
                                                  "default: about 120 points")] = None,
) -> metrics.MetricsOut:
    """GPU utilization, memory, power and temperature per GPU, and the workload's CPU and
    memory, in windows of ``step`` (average, min, max). Series marked ``simulated`` do not
    come from hardware."""
    m = gpuaas.get_instance_model(caller.session, instance_id)
    return gpuaas.instance_metrics(caller.session, m, start=_aware(start, "from"),
                                   end=_aware(end, "to"), step_seconds=step,
                                   now=ctx.clock.now())


@router.get("/instances/{instance_id}/events", response_model=list[gpuaas.InstanceEvent])
def instance_events(instance_id: str,
                    caller: Annotated[Caller, Authorize("gpuaas.instances.read", scope=INST)],
                    ) -> list[gpuaas.InstanceEvent]:
    """What happened to the instance besides its state changes: idle warnings, idle stops
    and the metric window that justified them."""
    return gpuaas.instance_events(caller.session, instance_id)
