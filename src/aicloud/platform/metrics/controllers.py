"""The retention controller of metrics."""

from __future__ import annotations

from datetime import timedelta

from aicloud.platform.metrics.store import prune
from aicloud.shared.clock import Clock
from aicloud.shared.controllers import Controller
from aicloud.shared.db import Database


def retention_controller(db: Database, clock: Clock, *, retention: timedelta,
                         interval_seconds: float = 300.0) -> Controller:
    """Deletes buckets past the retention every few minutes: each pass deletes a few
    minutes' worth, so no pass holds a long lock. Several workers may run it: deletes of the
    same rows are idempotent."""
    def run() -> int:
        with db.transaction() as session:
            return prune(session, now=clock.now(), retention=retention)
    return Controller(name="metrics-retention", interval_seconds=interval_seconds,
                      run_once=run)
