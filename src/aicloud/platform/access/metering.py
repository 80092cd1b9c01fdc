"""``endpoint_requests``: every request an endpoint served, by status class, billed.

The proxy counts in memory (no write per request); a controller of every API process turns
the counts into usage records and ingests them through billing's usage path every few
seconds. Each batch's records carry keys ``<endpoint>:<key>:<class>:<process>:<batch>``, and a
batch that failed is retried with exactly the same records until it is stored, so a retry
after an ambiguous commit is a duplicate billing ignores: billed requests = served requests.

What is not covered: a process killed between serving requests and its next flush loses
those counts (at most one flush interval of its requests go unbilled, never billed twice).
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from datetime import datetime, timedelta

from aicloud.platform import audit, billing
from aicloud.shared.clock import utcnow
from aicloud.shared.db import Database
from aicloud.shared.errors import ValidationFailed
from aicloud.shared.ids import new_id

log = logging.getLogger(__name__)
METER = billing.Meter(name="endpoint_requests", unit="request", dimension="status_class",
                      product="access", description="Requests served by an API endpoint, "
                      "by status class (2xx, 4xx, 5xx)")
SOURCE = "access-endpoints"
ACTOR = audit.Actor.system("access-metering")
# Default prices (micro-USD per request), seeded where the profile seeds prices: what the
# workload answered is billed; failures (5xx, including the proxy's 502/504) are not.
DEFAULT_PRICES = (("2xx", 100), ("3xx", 100), ("4xx", 100), ("5xx", 0))


def status_class(status: int) -> str:
    return f"{min(max(status // 100, 1), 5)}xx"


@dataclass(frozen=True)
class _Line:
    endpoint_id: str
    key_id: str
    project_id: str
    scope_path: str
    principal_id: str
    status_class: str


class EndpointMeter:
    """The counts of one API process (thread-safe: the event loop counts, a controller
    thread flushes)."""

    def __init__(self) -> None:
        self.process = new_id("proc")
        self._lock = threading.Lock()
        self._counts: dict[_Line, int] = {}
        self._since: datetime | None = None
        self._pending: list[billing.UsageIn] | None = None
        self._batch = 0
        self.billed = 0  # requests stored (for tests and /metrics)

    def count(self, *, endpoint_id: str, key_id: str, project_id: str, scope_path: str,
              principal_id: str, status: int) -> None:
        line = _Line(endpoint_id, key_id, project_id, scope_path, principal_id,
                     status_class(status))
        with self._lock:
            if self._since is None:
                self._since = utcnow()
            self._counts[line] = self._counts.get(line, 0) + 1

    def _cut(self) -> list[billing.UsageIn] | None:
        with self._lock:
            if self._pending is not None:
                return self._pending
            if not self._counts:
                return None
            counts, since = self._counts, self._since or utcnow()
            self._counts, self._since = {}, None
            self._batch += 1
            end = max(utcnow(), since + timedelta(microseconds=1))
            self._pending = [billing.UsageIn(
                resource_id=line.endpoint_id, project_id=line.project_id,
                scope_path=line.scope_path, principal_id=line.principal_id or None,
                meter=METER.name, dimension_value=line.status_class, quantity=n,
                window_start=since, window_end=end,
                idempotency_key=f"{line.endpoint_id}:{line.key_id}:{line.status_class}:"
                                f"{self.process}:{self._batch}", source=SOURCE)
                for line, n in counts.items()]
            return self._pending

    def flush(self, db: Database) -> int:
        """Store what was counted; returns the requests stored. A failed batch stays pending
        and is sent again, identical, next time."""
        stored = 0
        while (batch := self._cut()) is not None:
            n = sum(r.quantity for r in batch)
            try:
                with db.transaction() as session:
                    billing.ingest_usage(session, batch, actor=ACTOR)
            except ValidationFailed:
                # A scope that no longer exists (a deleted project): nobody to bill.
                log.exception("dropping %d endpoint usage record(s) billing refused",
                              len(batch))
                n = 0
            with self._lock:
                self._pending = None
                self.billed += n
            stored += n
        return stored
