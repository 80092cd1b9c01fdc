"""Stop running instances when a budget says so, or when the wallet is exhausted.

Reads billing's ``billing.budget.exceeded`` outbox topic with a durable cursor; for a budget
whose action is ``stop_workloads`` every active instance at or below its scope is stopped,
with the budget named in the reason the user sees. The cursor moves in the same transaction
as the stops, so an event is acted on exactly once even across restarts.

Wallets: usage is always charged (billing lets usage overdraw a wallet), so each pass also
looks at the organizations with instances on nodes; one whose wallet (posted minus open holds
other than those instances' own admission holds, plus the credit limit) is below zero has its
instances stopped, with the real balance in the reason.

The composition root runs this consumer at a short interval: the rater announces an exhausted
budget in the transaction that posts the exhausting charge, so the stop follows within a second.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy.orm import Session

from aicloud.platform import audit, billing
from aicloud.products.gpuaas.instances import stop_scope, wallets_in_use
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
            stopped += self._stop_exhausted_wallets(session)
        return stopped

    def _stop_exhausted_wallets(self, session: Session) -> int:
        stopped = 0
        for (org_id, currency), own_holds in wallets_in_use(session).items():
            # The running instances' own admission holds reserve what their usage charges
            # already carry: counting them would stop work early and show a balance the
            # wallet does not have. Other holds (instances still waiting) do count.
            bal = billing.balance(session, billing.org_wallet(session, org_id, currency).id,
                                  now=self.clock.now(), excluding_holds=own_holds)
            if bal.available + bal.credit_limit < 0:
                stopped += len(stop_scope(
                    session, f"/{org_id}", actor=ACTOR, now=self.clock.now(),
                    reason=(f"the wallet of {org_id} is exhausted: balance {bal.posted} "
                            f"micro-{currency}, available {bal.available} (other holds "
                            f"{bal.held}), credit limit {bal.credit_limit}")))
        return stopped
