"""Browser apps: who opened which app (audited once per credential), and the signed
tickets of the per-app subdomain mode.

Auditing every proxied request would write an audit event per image and XHR; an app is
"opened" once per credential (a login session or an API key) and resource. Each API process
remembers what it has recorded (bounded, for OPEN_MEMORY); a process that has not seen that
pair records it again, so a session spread over N replicas is recorded at most N times.

Subdomain mode (``apps_host_suffix``): each app is its own origin
(``{resource_id}.{suffix}``), which the platform's session cookie never reaches. The API
host hands the browser a short-lived ticket (HMAC-signed: principal, resource, expiry) in a
redirect; the app host exchanges it for a host-only cookie of its own, signed the same way
and valid for APP_COOKIE_SECONDS; every request re-checks the permission with IAM's policy.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections import OrderedDict

from sqlalchemy.orm import Session

from aicloud.platform import audit
from aicloud.platform.access.resources import AccessTarget

OPEN_MEMORY = 12 * 3600.0
OPEN_MEMORY_SIZE = 50_000
TICKET_SECONDS = 60
APP_COOKIE_SECONDS = 3600
APP_COOKIE = "aicloud_app"


class OpenedApps:
    """(credential, resource) pairs this process has audited as opened."""

    def __init__(self, *, ttl: float = OPEN_MEMORY, size: int = OPEN_MEMORY_SIZE):
        self.ttl, self.size = ttl, size
        self._seen: OrderedDict[tuple[str, str], float] = OrderedDict()

    def first_time(self, credential: str, resource_id: str) -> bool:
        key = (credential, resource_id)
        now = time.monotonic()
        at = self._seen.get(key)
        if at is not None and now - at < self.ttl:
            self._seen.move_to_end(key)
            return False
        self._seen[key] = now
        self._seen.move_to_end(key)
        while len(self._seen) > self.size:
            self._seen.popitem(last=False)
        return True

    def forget(self, credential: str, resource_id: str) -> None:
        """Undo first_time when recording failed (the next request records it)."""
        self._seen.pop((credential, resource_id), None)


def record_app_open(session: Session, target: AccessTarget, *, actor: audit.Actor,
                    mode: str) -> None:
    audit.record(session, actor=actor, action="access.app.open",
                 target_type=target.resource_type, target_id=target.id,
                 scope_path=target.scope_path,
                 changes=audit.diff(None, {"mode": mode, "kind": target.kind}))


class Signer:
    """HMAC-SHA256 tokens of small JSON payloads with an expiry (tickets and app cookies)."""

    def __init__(self, secret: str, purpose: str):
        self._key = hmac.new(secret.encode(), b"aicloud-access:" + purpose.encode(),
                             hashlib.sha256).digest()

    def sign(self, payload: dict[str, object], ttl: int, *, now: float | None = None) -> str:
        body = dict(payload, exp=int((now or time.time()) + ttl))
        raw = base64.urlsafe_b64encode(json.dumps(body, separators=(",", ":"),
                                                  sort_keys=True).encode()).rstrip(b"=")
        mac = base64.urlsafe_b64encode(hmac.new(self._key, raw, hashlib.sha256).digest()
                                       ).rstrip(b"=")
        return (raw + b"." + mac).decode()

    def verify(self, token: str, *, now: float | None = None) -> dict[str, object] | None:
        raw, _, mac = token.encode("latin-1", "replace").partition(b".")
        want = base64.urlsafe_b64encode(hmac.new(self._key, raw, hashlib.sha256).digest()
                                        ).rstrip(b"=")
        if not raw or not hmac.compare_digest(mac, want):
            return None
        try:
            body = json.loads(base64.urlsafe_b64decode(raw + b"=" * (-len(raw) % 4)))
        except ValueError:
            return None
        if not isinstance(body, dict) or int(body.get("exp", 0)) < (now or time.time()):
            return None
        return body
