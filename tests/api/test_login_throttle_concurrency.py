"""Concurrent failed logins: every failure is counted (no lost updates, no duplicate-key
errors on the first failure), the lock engages at exactly the limit, per email and per client
address, on SQLite and PostgreSQL."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from aicloud.platform import iam
from aicloud.platform.iam.models import LoginThrottleModel
from aicloud.platform.iam.service import MAX_FAILURES, MAX_FAILURES_PER_ADDRESS
from aicloud.runtime import AppContext, build_context
from aicloud.shared.db import Database
from tests.conftest import LiveServer, make_settings

# The race windows under test are as wide as production's hashing makes them.
pytestmark = pytest.mark.usefixtures("production_password_hashing")


def test_concurrent_failures_are_all_counted(migrated_pg_url: str) -> None:
    db = Database(migrated_pg_url)
    with db.transaction() as s:
        iam.create_user(s, email="target@example.org", password="correct horse battery")
    try:
        with LiveServer(build_context(make_settings(db), db)) as server:
            def attempt(_: int) -> int:
                return httpx.post(server.url + "/auth/login", timeout=30, json={
                    "email": "target@example.org", "password": "wrong"}).status_code

            with ThreadPoolExecutor(8) as pool:
                codes = list(pool.map(attempt, range(8)))
            ok = httpx.post(server.url + "/auth/login", json={
                "email": "target@example.org", "password": "correct horse battery"})
        assert sorted(set(codes)) in ([401], [401, 429])
        with db.transaction() as s:
            row = s.get(LoginThrottleModel, "target@example.org")
            assert row is not None and row.locked_until is not None
            assert row.failures == codes.count(401)
        assert ok.status_code == 429
    finally:
        db.dispose()


def _parallel_logins(server: LiveServer, emails: list[str], password: str) -> list[int]:
    """All at once from one client address (127.0.0.1), over real sockets."""
    def attempt(email: str) -> int:
        return httpx.post(server.url + "/auth/login", timeout=60, json={
            "email": email, "password": password}).status_code

    with ThreadPoolExecutor(len(emails)) as pool:
        return list(pool.map(attempt, emails))


def test_parallel_wrong_passwords_lock_after_exactly_the_limit(
    ctx: AppContext, live_server: LiveServer,
) -> None:
    """Many wrong passwords at once for one email: exactly MAX_FAILURES answer 401 and every
    other one 429 (the count and the lock are one atomic step), on SQLite and PostgreSQL."""
    with ctx.db.transaction() as s:
        iam.create_user(s, email="target@example.org", password="correct horse battery")
    n = 4 * MAX_FAILURES
    codes = _parallel_logins(live_server, ["target@example.org"] * n, "wrong")
    assert codes.count(401) == MAX_FAILURES, codes
    assert codes.count(429) == n - MAX_FAILURES, codes
    ok = httpx.post(live_server.url + "/auth/login", json={
        "email": "target@example.org", "password": "correct horse battery"})
    assert ok.status_code == 429
    with ctx.db.transaction() as s:
        row = s.get(LoginThrottleModel, "target@example.org")
        assert row is not None and row.failures == MAX_FAILURES and row.locked_until


def test_password_spraying_is_limited_per_client_address(
    ctx: AppContext, live_server: LiveServer,
) -> None:
    """One password tried on many different emails at once from one address: exactly
    MAX_FAILURES_PER_ADDRESS are checked, the rest are 429, and then even a right password
    from that address is refused until the lock expires. Another address is not locked."""
    with ctx.db.transaction() as s:
        iam.create_user(s, email="real@example.org", password="correct horse battery")
    n = MAX_FAILURES_PER_ADDRESS + 8
    emails = [f"victim{i}@example.org" for i in range(n)]
    codes = _parallel_logins(live_server, emails, "Spring2026!")
    assert codes.count(401) == MAX_FAILURES_PER_ADDRESS, codes
    assert codes.count(429) == n - MAX_FAILURES_PER_ADDRESS, codes
    right = httpx.post(live_server.url + "/auth/login", json={
        "email": "real@example.org", "password": "correct horse battery"})
    assert right.status_code == 429
    with ctx.db.transaction() as s:  # the same account from another address still logs in
        assert iam.login(s, email="real@example.org", password="correct horse battery",
                         ip="192.0.2.7").token
        row = s.get(LoginThrottleModel, "ip 127.0.0.1")
        assert row is not None and row.failures == MAX_FAILURES_PER_ADDRESS
