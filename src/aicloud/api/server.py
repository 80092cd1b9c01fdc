"""How the API is put on a socket: the uvicorn configuration of `serve` and `api`, and how
many requests it serves at once.

Concurrency is derived from the database pool, so the two always agree:

- request slots = pool size - a reserve: how many requests may hold a database session at
  once. A request takes a slot (in the event loop, holding no thread) before its session,
  and gives it back after the commit. One that finds none within the pool timeout is
  answered 503 with Retry-After. So a request never waits in a worker thread for a
  connection; without this, 40 threads could all wait for the 15 connections held by
  requests that needed a thread to finish (the 15-20 s stalls of issue 11).
- the reserve serves what runs outside request slots: `serve`'s background controllers, the
  credential-use flusher, login's two short transactions (a login burst must not queue
  behind its own password hashing), the batches of an audit export. It is sized for them, not
  guaranteed: one that finds the pool empty waits the pool timeout at most, then fails (503).
- worker threads = pool size + NON_DATABASE_THREADS: a thread blocked on the database holds
  one of the pool's connections (or waits the pool timeout at most for one), so threads are
  left for a slot holder to commit (on SQLite the writers queued on the lock wait for it)
  and for requests that need no database (/healthz, /metrics).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import anyio
import anyio.to_thread
import uvicorn
from fastapi import FastAPI

from aicloud.shared.config import Settings
from aicloud.shared.db import Database
from aicloud.shared.errors import Overloaded

POOL_RESERVE = 8
NON_DATABASE_THREADS = 8


@dataclass(frozen=True)
class Concurrency:
    request_slots: int
    threads: int
    slot_wait_seconds: float


def concurrency(db: Database) -> Concurrency:
    reserve = min(POOL_RESERVE, db.pool_size // 3)
    return Concurrency(request_slots=max(1, db.pool_size - reserve),
                       threads=db.pool_size + NON_DATABASE_THREADS,
                       slot_wait_seconds=db.pool_timeout)


class RequestSlots:
    """The request slots of one app (see the module docstring)."""

    def __init__(self, size: int, wait_seconds: float):
        self.size = size
        self.wait_seconds = wait_seconds
        self._free = anyio.Semaphore(size)

    @property
    def in_use(self) -> int:
        return self.size - self._free.value

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        try:
            self._free.acquire_nowait()
        except anyio.WouldBlock:
            acquired = False
            with anyio.move_on_after(self.wait_seconds):
                await self._free.acquire()
                acquired = True
            if not acquired:
                raise Overloaded(f"all {self.size} database slots stayed busy for "
                                 f"{self.wait_seconds:g} s; retry shortly",
                                 retry_after_seconds=1) from None
        try:
            yield
        finally:
            self._free.release()


def set_thread_limit(threads: int) -> None:
    """Size the worker-thread pool of the running event loop (sync endpoints and
    dependencies run there)."""
    anyio.to_thread.current_default_thread_limiter().total_tokens = threads


def server_config(app: FastAPI, settings: Settings, *, host: str | None = None,
                  port: int | None = None) -> uvicorn.Config:
    """uvicorn settings for ``app``: TLS from tls_cert_file/tls_key_file when set, and
    uvicorn's own proxy-header handling off (it would believe X-Forwarded-* from 127.0.0.1);
    TransportSecurityMiddleware believes them from trusted_proxies only."""
    return uvicorn.Config(
        app, host=host or settings.host, port=port or settings.port,
        ssl_certfile=settings.tls_cert_file, ssl_keyfile=settings.tls_key_file,
        proxy_headers=False, server_header=False,
        log_config=None, access_log=False, timeout_graceful_shutdown=10,
    )


def base_url(settings: Settings, host: str, port: int) -> str:
    scheme = "https" if settings.tls_cert_file else "http"
    return f"{scheme}://{host}:{port}"
