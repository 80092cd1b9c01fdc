"""Signed delivery of budget alerts to webhook URLs, with retries.

The body is sent as is, with ``X-AICloud-Signature: sha256=<hex HMAC-SHA256 of the body>``
keyed by the budget's secret (or the configured one), and ``X-AICloud-Delivery`` so receivers
can drop duplicates: a delivery may arrive more than once if the process dies between the
POST and recording its success. Nothing is held open during the HTTP call: a delivery is
leased in one short transaction, posted, and its outcome recorded in another.

Each delivery checks its URL again (``webhook_targets``): the host is resolved, every address
checked, and the POST connects to the checked address (Host header and TLS SNI name the
host), with redirects not followed. A refused target fails the delivery at once.
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
from aicloud.platform.billing.webhook_targets import (
    WebhookPolicy,
    WebhookTargetUnresolved,
    check_target,
)
from aicloud.shared.clock import Clock, SystemClock
from aicloud.shared.db import Database
from aicloud.shared.errors import ValidationFailed

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
                limit: int = 20, timeout: float = 5.0,
                policy: WebhookPolicy | None = None) -> int:
    """Post due deliveries; returns how many succeeded. ``policy``: where webhooks may go
    (public addresses only by default)."""
    clock = clock or SystemClock()
    policy = policy or WebhookPolicy()
    leased = _lease(db, clock.now(), default_secret, limit)
    delivered = 0
    with httpx.Client(timeout=timeout, follow_redirects=False, trust_env=False) as client:
        for d in leased:
            error, final = _post(client, d, policy), False
            if error is not None and error.startswith(REFUSED):
                final = True  # a refused target stays refused: no retries
            _record(db, d, error, clock.now(), final=final)
            delivered += error is None
    return delivered


REFUSED = "refused: "


def _post(client: httpx.Client, d: _Leased, policy: WebhookPolicy) -> str | None:
    """POST one delivery to its checked address; the error, or None on a 2xx."""
    try:
        target = check_target(d.url, policy)
    except WebhookTargetUnresolved as exc:
        return exc.detail[:500]  # DNS may answer later: retried with backoff
    except ValidationFailed as exc:
        return f"{REFUSED}{exc.detail}"[:500]
    assert target is not None
    body = d.body.encode()
    try:
        r = client.post(
            target.connect_url, content=body,
            headers={"Host": target.host_header, "Content-Type": "application/json",
                     SIGNATURE_HEADER: sign(d.secret, body), "X-AICloud-Delivery": d.id},
            extensions={"sni_hostname": target.host} if target.scheme == "https" else {})
    except httpx.HTTPError as exc:
        return f"{type(exc).__name__}: {exc}"[:500]
    if not 200 <= r.status_code < 300:
        return f"HTTP {r.status_code}"
    return None


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


def _record(db: Database, d: _Leased, error: str | None, now: datetime, *,
            final: bool = False) -> None:
    with db.transaction() as session:
        m = session.get(WebhookDeliveryModel, d.id)
        if m is None or m.status != "pending":
            return
        m.attempts += 1
        if error is None:
            m.status, m.delivered_at, m.last_error = "delivered", now, None
        else:
            m.last_error = error
            if final or m.attempts >= MAX_ATTEMPTS:
                m.status = "failed"
            else:
                m.next_attempt_at = now + backoff(m.attempts)
        if m.status != "pending":  # retries are in the row; the outcome goes to the audit log
            audit.record(session, actor=DELIVERER, action=f"billing.webhook.{m.status}",
                         target_type="budget", target_id=m.budget_id,
                         details={"delivery_id": m.id, "attempts": m.attempts,
                                  "error": m.last_error})
