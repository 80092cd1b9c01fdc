"""When a credential (API key, login session) was last used, recorded off the request path.

Resolving a token is a read: an authenticated GET must not write (on SQLite a write takes the
database's one write lock; on PostgreSQL every request on one token would queue on its row).
Instead the request notes the use in a ``CredentialUsage`` buffer of its process, and a
background thread of the API process flushes the buffer in one UPDATE per table.

Coalesced: a use is noted only when the stored ``last_used_at`` is older than ``RESOLUTION``
(so a credential is written at most about once a minute, however busy), and the buffer keeps
one time per credential. ``last_used_at`` therefore lags real use by up to ``RESOLUTION``
plus the flush interval. On a crash (SIGKILL) the uses noted since the last flush are lost; a
clean shutdown flushes. The UPDATE never moves a stored time backwards, so API processes may
flush in any order.
"""

from __future__ import annotations

import threading
from datetime import datetime, timedelta

from sqlalchemy import case, literal, or_, update
from sqlalchemy.orm import Session

from aicloud.platform.iam.models import ApiKeyModel, AuthSessionModel
from aicloud.shared.db import Database, UTCDateTime

RESOLUTION = timedelta(minutes=1)
_CHUNK = 500  # ids per UPDATE (bound parameters stay well under every backend's limit)
_Model = type[ApiKeyModel] | type[AuthSessionModel]


def is_due(stored: datetime | None, now: datetime) -> bool:
    """Whether a use at ``now`` is news, given the stored ``last_used_at``."""
    return stored is None or now - stored >= RESOLUTION


class CredentialUsage:
    """The uses noted by one process and not yet written (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pending: dict[_Model, dict[str, datetime]] = {}
        # What this process wrote within RESOLUTION: a request that read the stored time
        # just before a flush committed must not queue the same credential again.
        self._written: dict[tuple[_Model, str], datetime] = {}

    def note(self, model: _Model, credential_id: str, stored: datetime | None,
             now: datetime) -> None:
        if not is_due(stored, now):
            return
        with self._lock:
            if not is_due(self._written.get((model, credential_id)), now):
                return
            times = self._pending.setdefault(model, {})
            if credential_id not in times or times[credential_id] < now:
                times[credential_id] = now

    def pending(self) -> int:
        with self._lock:
            return sum(len(t) for t in self._pending.values())

    def flush(self, db: Database) -> int:
        """Write every noted use in one short write transaction; returns how many. On
        failure the uses go back into the buffer (newest kept) for the next flush."""
        with self._lock:
            batch, self._pending = self._pending, {}
            if not batch:
                return 0
            # Marked written before the UPDATE commits: a request resolving meanwhile read
            # the old stored time and must not queue the credential again.
            newest = max(at for times in batch.values() for at in times.values())
            self._written = {k: at for k, at in self._written.items()
                             if not is_due(at, newest)}
            for model, times in batch.items():
                for credential_id, at in times.items():
                    self._written[(model, credential_id)] = at
        try:
            with db.transaction() as session:
                for model, times in batch.items():
                    write_last_used(session, model, times)
        except Exception:
            with self._lock:
                for model, times in batch.items():
                    for credential_id in times:
                        self._written.pop((model, credential_id), None)
            for model, times in batch.items():
                for credential_id, at in times.items():
                    self.note(model, credential_id, None, at)
            raise
        return sum(len(t) for t in batch.values())


def write_last_used(session: Session, model: _Model, times: dict[str, datetime]) -> None:
    """``UPDATE ... SET last_used_at = CASE id WHEN ... END`` for these credentials, never
    moving a stored time backwards."""
    ids = sorted(times)
    for start in range(0, len(ids), _CHUNK):
        chunk = ids[start:start + _CHUNK]
        new = case({i: literal(times[i], UTCDateTime()) for i in chunk}, value=model.id)
        session.execute(
            update(model)
            .where(model.id.in_(chunk),
                   or_(model.last_used_at.is_(None), model.last_used_at < new))
            .values(last_used_at=new)
            .execution_options(synchronize_session=False))
