"""Concurrent failed logins on PostgreSQL: every failure is counted (no lost updates, no
duplicate-key errors on the first failure) and the lock engages."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import httpx

from aicloud.platform import iam
from aicloud.platform.iam.models import LoginThrottleModel
from aicloud.runtime import build_context
from aicloud.shared.db import Database, migrate
from tests.conftest import LiveServer, make_settings


def test_concurrent_failures_are_all_counted(fresh_pg_url: str) -> None:
    db = Database(fresh_pg_url)
    migrate.upgrade(db)
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
