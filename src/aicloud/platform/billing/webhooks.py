"""Signed delivery of budget alerts to webhook URLs, with retries.

The body is sent as is, with ``X-AICloud-Signature: sha256=<hex HMAC-SHA256 of the body>``
keyed by the budget's secret (or the configured one), and ``X-AICloud-Delivery`` so receivers
can drop duplicates: a delivery may arrive more than once if the process dies between the
POST and recording its success. Nothing is held open during the HTTP call: a delivery is
leased in one short transaction, posted, and its outcome recorded in another.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from datetime import datetime, timedelta

import httpx
from sqlalchemy import select

from aicloud.platform import audit
from aicloud.platform.billing.models import BudgetModel, WebhookDeliveryModel
from aicloud.shared.clock import Clock, SystemClock
from aicloud.shared.db import Database

SIGNATURE_HEADER = "X-AICloud-Signature"
MAX_ATTEMPTS = 8
LEASE = timedelta(seconds=60)
DELIVERER = audit.Actor.system("billing-webhooks")


def sign(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def verify(secret: str, body: bytes, signature: str) -> bool:
    return hmac.compare_digest(sign(secret, body), signature)


def backoff(attempts: int) -> timedelta:
    return timedelta(seconds=min(3600, 2 ** attempts))


@dataclass(frozen=True)
class _Leased:
    id: str
    url: str
    body: str
    secret: str
    attempts: int


def deliver_due(db: Database, *, default_secret: str, clock: Clock | None = None,
                limit: int = 20, timeout: float = 5.0) -> int:
    """Post due deliveries; returns how many succeeded."""
    clock = clock or SystemClock()
    leased = _lease(db, clock.now(), default_secret, limit)
    delivered = 0
    with httpx.Client(timeout=timeout, follow_redirects=False) as client:
        for d in leased:
            body = d.body.encode()
            error: str | None = None
            try:
                r = client.post(d.url, content=body, headers={
                    "Content-Type": "application/json", SIGNATURE_HEADER: sign(d.secret, body),
                    "X-AICloud-Delivery": d.id})
                if not 200 <= r.status_code < 300:
                    error = f"HTTP {r.status_code}"
            except httpx.HTTPError as exc:
                error = f"{type(exc).__name__}: {exc}"[:500]
            _record(db, d, error, clock.now())
            delivered += error is None
    return delivered


def _lease(db: Database, now: datetime, default_secret: str, limit: int) -> list[_Leased]:
    W = WebhookDeliveryModel
    with db.transaction() as session:
        rows = session.scalars(select(W).where(W.status == "pending", W.next_attempt_at <= now)
                               .order_by(W.next_attempt_at).limit(limit)
                               .with_for_update(skip_locked=True)).all()
        out = []
        for m in rows:
            m.next_attempt_at = now + LEASE  # others skip it while this process posts it
            budget = session.get(BudgetModel, m.budget_id)
            secret = (budget.webhook_secret if budget and budget.webhook_secret
                      else default_secret)
            out.append(_Leased(m.id, m.url, m.body, secret, m.attempts))
        return out


def _record(db: Database, d: _Leased, error: str | None, now: datetime) -> None:
    with db.transaction() as session:
        m = session.get(WebhookDeliveryModel, d.id)
        if m is None or m.status != "pending":
            return
        m.attempts += 1
        if error is None:
            m.status, m.delivered_at, m.last_error = "delivered", now, None
        else:
            m.last_error = error
            if m.attempts >= MAX_ATTEMPTS:
                m.status = "failed"
            else:
                m.next_attempt_at = now + backoff(m.attempts)
        if m.status != "pending":  # retries are in the row; the outcome goes to the audit log
            audit.record(session, actor=DELIVERER, action=f"billing.webhook.{m.status}",
                         target_type="budget", target_id=m.budget_id,
                         details={"delivery_id": m.id, "attempts": m.attempts,
                                  "error": m.last_error})
