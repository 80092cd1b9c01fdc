"""Usage reports for running instances: whole-second windows, exactly once.

A window runs from ``last_metered_at`` for as many WHOLE seconds as have passed; the fraction
left over starts the next window, so the windows of an instance tile its run time and the
total reported is its run time to the second. Each record's idempotency key is
``<instance id>:<meter>:<window start>``; the records and the move of ``last_metered_at``
are written in one transaction, so a crash reports a window entirely or not at all, and a
repeated report (lease lost, retry) is a duplicate billing ignores.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy.orm import Session

from aicloud.platform import audit, billing
from aicloud.products.gpuaas.admission import usage_per_second
from aicloud.products.gpuaas.models import InstanceModel

SOURCE = "gpuaas-agent"


def meter_instance(session: Session, inst: InstanceModel, *, until: datetime,
                   actor: audit.Actor) -> int:
    """Report usage of ``inst`` up to ``until`` (whole seconds); returns the seconds reported."""
    start = inst.last_metered_at
    if start is None or until <= start:
        return 0
    seconds = int((until - start).total_seconds())
    if seconds <= 0:
        return 0
    end = start + timedelta(seconds=seconds)
    records = [billing.UsageIn(
        resource_id=inst.id, project_id=inst.project_id, scope_path=inst.scope_path,
        principal_id=inst.created_by, meter=meter, dimension_value=dim,
        quantity=per_second * seconds, window_start=start, window_end=end,
        idempotency_key=f"{inst.id}:{meter}:{start.isoformat()}", source=SOURCE)
        for meter, dim, per_second in usage_per_second(inst.gpu_model, inst.gpu_count,
                                                       inst.vcpus, inst.memory_gib)
        if per_second > 0]
    # Stored for the rater, not rated here: this runs in the agent's heartbeat transaction,
    # which holds its node's and instances' rows; rating would add the organization's wallet
    # row to what it holds, and with it a lock order that other writers do not share.
    billing.ingest_usage(session, records, actor=actor, now=until, rate=False)
    inst.last_metered_at = end
    return seconds
