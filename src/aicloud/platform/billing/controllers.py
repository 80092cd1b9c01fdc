"""Billing's background controllers, for the composition root to run."""

from __future__ import annotations

import logging
import time

from aicloud.platform.billing.budgets import evaluate_budgets
from aicloud.platform.billing.closings import accounts_to_close, close_periods, last_ended_period
from aicloud.platform.billing.holds import expire_holds
from aicloud.platform.billing.rating import count_waiting, rate_batch
from aicloud.platform.billing.webhook_targets import WebhookPolicy
from aicloud.platform.billing.webhooks import deliver_due
from aicloud.shared.clock import Clock, SystemClock
from aicloud.shared.controllers import Controller
from aicloud.shared.db import Database

log = logging.getLogger(__name__)


def rate_until_idle(db: Database, *, batch_size: int = 2000, max_batches: int = 50,
                    clock: Clock | None = None, settle_seconds: float = 0) -> int:
    """Rate waiting usage, one transaction per batch, until none is left (or max_batches);
    returns how many records this call rated.

    On PostgreSQL a batch skips records another rater has claimed, so "nothing to claim" is
    not "nothing waiting". With ``settle_seconds`` the call also waits, up to that long, for
    those to commit: on return every record ingested before the call is rated.
    """
    clock = clock or SystemClock()
    deadline = time.monotonic() + settle_seconds
    rated = batches = 0
    while batches < max_batches:
        with db.transaction() as session:
            n = rate_batch(session, batch_size=batch_size, now=clock.now()).rated
        rated += n
        if n:
            batches += 1
            continue
        if time.monotonic() >= deadline:
            break
        with db.transaction() as session:
            if count_waiting(session) == 0:
                break
        time.sleep(0.05)  # another rater holds them; its batch commits shortly
    if rated:
        log.info("rated %d usage record(s)", rated)
    return rated


def close_ended_periods(db: Database, *, clock: Clock | None = None) -> int:
    """Close every account through the last month that has ended, one account per
    transaction (each holds only that account's row lock, briefly); the closings written."""
    now = (clock or SystemClock()).now()
    through = last_ended_period(now)
    with db.transaction() as session:
        accounts = accounts_to_close(session, through)
    written = 0
    for account_id in accounts:
        with db.transaction() as session:
            written += close_periods(session, account_id, through, now=now)
    return written


def controllers(db: Database, *, interval_seconds: float, clock: Clock | None = None,
                webhook_secret: str = "",
                webhook_policy: WebhookPolicy | None = None) -> list[Controller]:
    clock = clock or SystemClock()

    def _budgets() -> int:
        with db.transaction() as session:
            return len(evaluate_budgets(session, now=clock.now()))

    def _expire() -> int:
        with db.transaction() as session:
            return expire_holds(session, now=clock.now())

    return [
        Controller(name="billing-rater", interval_seconds=interval_seconds,
                   run_once=lambda: rate_until_idle(db, clock=clock)),
        Controller(name="billing-hold-expiry", interval_seconds=max(interval_seconds, 10.0),
                   run_once=_expire),
        # A backstop: the rater evaluates budgets as it posts spend (see budgets.py).
        Controller(name="billing-budgets", interval_seconds=max(interval_seconds, 30.0),
                   run_once=_budgets),
        # Statements close lazily too; this keeps the first statement of a month cheap.
        Controller(name="billing-period-close", interval_seconds=max(interval_seconds, 300.0),
                   run_once=lambda: close_ended_periods(db, clock=clock)),
        Controller(name="billing-webhooks", interval_seconds=max(interval_seconds, 5.0),
                   run_once=lambda: deliver_due(db, default_secret=webhook_secret,
                                                clock=clock, policy=webhook_policy)),
    ]
