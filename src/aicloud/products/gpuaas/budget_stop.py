"""Stop running instances when a budget says so.

Reads billing's ``billing.budget.exceeded`` outbox topic with a durable cursor; for a budget
whose action is ``stop_workloads`` every active instance at or below its scope is stopped,
with the budget named in the reason the user sees. The cursor moves in the same transaction
as the stops, so an event is acted on exactly once even across restarts.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from aicloud.platform import audit, billing
from aicloud.products.gpuaas.instances import stop_scope
from aicloud.shared import events
from aicloud.shared.clock import Clock, SystemClock
from aicloud.shared.db import Database

CONSUMER = "gpuaas-budget-stop"
ACTOR = audit.Actor.system(CONSUMER)


@dataclass
class BudgetStopConsumer:
    db: Database
    clock: Clock = field(default_factory=SystemClock)

    def run_once(self) -> int:
        """Handle the waiting events; returns how many instances were asked to stop."""
        stopped = 0
        with self.db.transaction() as session:
            for event in events.read(session, CONSUMER, topics=[billing.EXCEEDED_TOPIC]):
                p = event.payload
                if p.get("action") == "stop_workloads":
                    stopped += len(stop_scope(
                        session, p["scope_path"], actor=ACTOR, now=self.clock.now(),
                        reason=(f"budget {p['budget_id']} of {p['scope_path']} exhausted for "
                                f"{p['period']}: spent {p['spend']} of {p['amount']} "
                                f"micro-{p['currency']}")))
                events.ack(session, CONSUMER, event.seq)
        return stopped
