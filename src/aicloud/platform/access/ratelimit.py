"""Per-key rate limits: token buckets shared by every API process through the database.

Each key has one bucket row (``access_rate_buckets``): up to ``rate_limit_requests`` tokens,
refilled at ``rate_limit_requests`` per ``rate_limit_window_seconds``. A process does not
touch the row per request: it *leases* a small batch of tokens (one locked read-modify-write
of the row; SELECT ... FOR UPDATE on PostgreSQL, SQLite's write lock) and spends them
locally. So the limit holds across any number of API processes (a token is granted once,
by the row), and the database sees one write per batch, not per request:

- batch = rate x LEASE_SECONDS, at least 1 and at most a quarter of the bucket: a slow key
  (600/min) leases 1 token at a time, a fast one (100,000/s) thousands;
- leased tokens unused after LEASE_TTL are dropped, never returned: the error is always on
  the strict side (a process that stops using a key wastes at most one batch);
- an empty bucket answers 429 with Retry-After (the time until one token refills) and the
  process remembers it until then, so a flood of refused requests costs no queries.
"""

from __future__ import annotations

import asyncio
import math
import time
from dataclasses import dataclass, field

import anyio.to_thread
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from aicloud.platform.access.endpoints import KeyGrant
from aicloud.platform.access.models import RateBucketModel
from aicloud.shared.db import Database

LEASE_SECONDS = 0.05
LEASE_TTL = 1.0


@dataclass
class _Local:
    tokens: int = 0
    expires: float = 0.0
    denied_until: float = 0.0
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


def lease_size(requests: int, window_seconds: int) -> int:
    rate = requests / window_seconds
    return max(1, min(int(rate * LEASE_SECONDS), requests // 4))


def take_tokens(db: Database, key_id: str, requests: int, window_seconds: int, want: int,
                *, now_us: int | None = None) -> tuple[int, float]:
    """Grant up to ``want`` tokens from the key's bucket: (granted, seconds until the next
    token when none was granted)."""
    now_us = now_us if now_us is not None else time.time_ns() // 1000
    cap = requests * 1000
    for _ in range(2):
        try:
            with db.transaction() as s:
                row = s.scalar(select(RateBucketModel).where(
                    RateBucketModel.key_id == key_id).with_for_update())
                if row is None:
                    row = RateBucketModel(key_id=key_id, milli_tokens=cap, updated_us=now_us)
                    s.add(row)
                    s.flush()
                elapsed = max(0, now_us - row.updated_us)
                # milli-tokens refilled: elapsed us * requests/window s, exact in integers.
                refill = elapsed * requests * 1000 // (window_seconds * 1_000_000)
                available = min(cap, row.milli_tokens + refill)
                granted = min(want, available // 1000)
                if available == cap:  # full: time spent full refills nothing
                    row.updated_us = max(row.updated_us, now_us)
                elif refill:  # advance only by the time credited: keep the remainder
                    row.updated_us += refill * window_seconds * 1_000_000 // (requests * 1000)
                row.milli_tokens = available - granted * 1000
                if granted:
                    return granted, 0.0
                missing = 1000 - row.milli_tokens
                return 0, missing * window_seconds / (requests * 1000)
        except IntegrityError:  # another process created the row first: read it again
            continue
    raise RuntimeError(f"cannot create the rate bucket of {key_id}")


class RateLimiter:
    """The process's side of the shared buckets (see the module docstring)."""

    def __init__(self, db: Database):
        self.db = db
        self._keys: dict[str, _Local] = {}

    def forget(self, key_id: str) -> None:
        self._keys.pop(key_id, None)

    async def acquire(self, grant: KeyGrant) -> float | None:
        """None when the request may go; else the seconds to wait (Retry-After)."""
        local = self._keys.get(grant.key_id)
        if local is None:
            local = self._keys[grant.key_id] = _Local()
        now = time.monotonic()
        if local.tokens > 0 and now < local.expires:
            local.tokens -= 1
            return None
        if now < local.denied_until:
            return local.denied_until - now
        async with local.lock:
            now = time.monotonic()
            if local.tokens > 0 and now < local.expires:  # leased while we waited
                local.tokens -= 1
                return None
            if now < local.denied_until:
                return local.denied_until - now
            want = lease_size(grant.rate_limit_requests, grant.rate_limit_window_seconds)
            granted, wait = await anyio.to_thread.run_sync(
                take_tokens, self.db, grant.key_id, grant.rate_limit_requests,
                grant.rate_limit_window_seconds, want)
            now = time.monotonic()
            if granted == 0:
                local.tokens, local.denied_until = 0, now + wait
                return wait
            local.tokens, local.expires = granted - 1, now + LEASE_TTL
            return None


def retry_after_header(seconds: float) -> str:
    return str(max(1, math.ceil(seconds)))
