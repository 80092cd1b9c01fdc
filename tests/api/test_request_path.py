"""The request path under load (issue 11): reads take no write lock and write nothing,
credential uses are written later and coalesced, request slots and the connection pool agree,
and a request that cannot get a connection is a fast 503, never a hang. On SQLite and
PostgreSQL, against a real server on a socket."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass

import httpx
import pytest
from fastapi import APIRouter, Request
from fastapi.routing import APIRoute, iter_route_contexts
from pydantic import BaseModel, field_validator
from sqlalchemy import Connection, event, select, text, update
from sqlalchemy.exc import DBAPIError

from aicloud.api import create_app
from aicloud.api.authz import PUBLIC
from aicloud.api.deps import DbSession, RequestRoute
from aicloud.api.server import concurrency
from aicloud.platform import audit, iam
from aicloud.platform.iam.models import ApiKeyModel, AuthSessionModel
from aicloud.runtime import AppContext, build_context
from aicloud.shared.clock import utcnow
from aicloud.shared.db import Database, ReadOnlyViolation
from aicloud.shared.db.engine import READ_ONLY
from tests.conftest import LiveServer, make_settings

ACTOR = audit.Actor.system("test")
PASSWORD = "correct horse battery staple"
WRITES = ("INSERT", "UPDATE", "DELETE", "BEGIN IMMEDIATE")


@dataclass
class World:
    project_id: str
    keys: list[str]       # one API key per user, each user a project-viewer
    key_ids: list[str]
    admin_key: str        # the platform admin's key (for writers)


def make_world(db: Database, users: int) -> World:
    with db.transaction() as s:
        admin = iam.bootstrap_admin(s, email="root@example.org", password=PASSWORD)
        admin_key = iam.create_api_key(s, admin.user.id, iam.ApiKeyCreate(name="admin"),
                                       actor=ACTOR, grantor=None)
        org = iam.create_org(s, "load", actor=ACTOR)
        prj = iam.create_project(s, name="load", org_id=org.id, actor=ACTOR)
        keys = []
        for i in range(users):
            user = iam.create_user(s, email=f"u{i}@example.org")
            iam.create_binding(s, prj.id, iam.RoleBindingCreate(
                principal_id=user.id, role_id="project-viewer"), actor=ACTOR, grantor=None)
            keys.append(iam.create_api_key(s, user.id, iam.ApiKeyCreate(name=f"k{i}"),
                                           actor=ACTOR, grantor=None))
    return World(prj.id, [k.secret for k in keys], [k.id for k in keys], admin_key.secret)


@contextmanager
def statements(db: Database, params: list[str] | None = None) -> Iterator[list[str]]:
    """Every SQL statement the process sends to ``db`` while inside the block (and, into
    ``params``, their parameters as text)."""
    seen: list[str] = []

    def record(_conn, _cursor, statement, parameters, _context, _many) -> None:
        seen.append(" ".join(statement.split()).upper())
        if params is not None:
            params.append(str(parameters))

    event.listen(db.engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        event.remove(db.engine, "before_cursor_execute", record)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


# --- reads never write --------------------------------------------------------------------


def test_an_authenticated_get_issues_no_write(db: Database) -> None:
    """A GET resolves its token, authorizes and reads in a read-only transaction: no INSERT,
    UPDATE or DELETE, and on SQLite no BEGIN IMMEDIATE (the database's write lock). Today
    every authenticated request wrote the key's last_used_at."""
    world = make_world(db, 2)
    ctx = build_context(make_settings(db, last_used_flush_interval_seconds=60), db)
    with LiveServer(ctx) as server, httpx.Client(base_url=server.url) as client:
        client.get("/healthz")  # the flusher's first (empty) pass has run by now
        time.sleep(0.2)
        with statements(db) as seen:
            for token in (*world.keys, world.admin_key):
                r = client.get(f"/projects/{world.project_id}", headers=bearer(token))
                assert r.status_code == 200, r.text
                assert client.get("/auth/me", headers=bearer(token)).status_code == 200
            # The audit export streams in transactions of its own: read-only ones too.
            export = client.get("/audit/events/export", headers=bearer(world.admin_key))
            assert export.status_code == 200 and "iam.api_key.create" in export.text
            assert client.get("/readyz").status_code == 200
        assert seen, "the requests read nothing?"
        writes = [s for s in seen if s.startswith(WRITES)]
        assert writes == []
        if db.dialect == "sqlite":
            assert "BEGIN" in seen  # deferred: WAL readers take no lock
    # The uses were noted, and a clean stop wrote them.
    with db.transaction() as s:
        assert all(s.get(ApiKeyModel, k).last_used_at is not None for k in world.key_ids)


def test_a_write_in_a_read_transaction_fails_loudly(db: Database) -> None:
    """The ORM refuses to flush a change in a read transaction, and the database refuses a
    raw write; the connection goes back to the pool able to write again."""
    world = make_world(db, 1)
    with pytest.raises(ReadOnlyViolation, match="ApiKeyModel"), db.read_transaction() as s:
        s.get(ApiKeyModel, world.key_ids[0]).name = "renamed"
    with pytest.raises(DBAPIError), db.read_transaction() as s:
        s.execute(update(ApiKeyModel).values(name="renamed"))
    with db.transaction() as s:  # the same pooled connections write again
        s.execute(update(ApiKeyModel).values(name="written"))
    with db.read_transaction() as s:
        assert set(s.scalars(select(ApiKeyModel.name))) == {"written"}


def test_a_get_route_that_writes_is_a_500_and_writes_nothing(db: Database) -> None:
    """A safe method runs read-only: a route that (wrongly) writes fails, a POST may write."""
    world = make_world(db, 1)
    ctx = build_context(make_settings(db), db)
    app = create_app(ctx)

    def rename(session: DbSession, request: Request) -> dict[str, str]:
        session.execute(text("UPDATE api_keys SET name = 'by-' || :m"),
                        {"m": request.method})
        return {"ok": "yes"}

    app.add_api_route("/test/rename", rename, methods=["GET", "POST"], dependencies=[PUBLIC])
    with LiveServer(ctx, app=app) as server:
        assert httpx.get(server.url + "/test/rename").status_code == 500
        with db.transaction() as s:
            assert s.get(ApiKeyModel, world.key_ids[0]).name == "k0"
        assert httpx.post(server.url + "/test/rename").status_code == 200
        with db.transaction() as s:
            assert s.get(ApiKeyModel, world.key_ids[0]).name == "by-POST"


# --- where the request's transaction ends -----------------------------------------------


class Small(BaseModel):
    status: str


def test_every_route_ends_its_read_transaction_in_its_endpoint_thread(db: Database) -> None:
    """Every route of the app has the route class that ends a read-only transaction in the
    endpoint's worker thread (saving a hop per GET), not only the routes measured."""
    app = create_app(build_context(make_settings(db), db))
    routes = [c.original_route for c in iter_route_contexts(app.routes)
              if isinstance(c.original_route, APIRoute)]
    assert len(routes) > 50 and all(isinstance(r, RequestRoute) for r in routes)


def test_a_read_ends_before_its_response_is_built_a_write_after(db: Database) -> None:
    """A GET's read-only transaction commits in the endpoint's thread as it returns, before
    the response is validated (no hop after it); a POST's write commits after its response
    was built: one that fails validation (a 500) writes nothing, one that passes is written
    before the client hears of it."""
    world = make_world(db, 1)
    ctx = build_context(make_settings(db), db)
    app = create_app(ctx)
    router = APIRouter(route_class=RequestRoute)
    order: list[str] = []

    class Checked(BaseModel):
        status: str

        @field_validator("status")
        @classmethod
        def seen(cls, value: str) -> str:
            order.append("response validated")
            return value

    @router.get("/test/read", response_model=Checked, dependencies=[PUBLIC])
    def read(session: DbSession) -> dict[str, str]:
        session.execute(text("SELECT 1"))
        order.append("endpoint returns")
        return {"status": "ok"}

    @router.post("/test/write", response_model=Checked, dependencies=[PUBLIC])
    def write(session: DbSession, bad: bool = False) -> dict[str, str]:
        session.execute(text("UPDATE api_keys SET name = 'written'"))
        order.append("endpoint returns")
        return {"wrong": "shape"} if bad else {"status": "ok"}

    app.include_router(router)

    def committed(conn: Connection) -> None:
        if conn.get_execution_options().get(READ_ONLY):  # not the watchers' transactions
            order.append("committed")

    event.listen(db.engine, "commit", committed)
    try:
        with LiveServer(ctx, app=app) as server:
            assert httpx.get(server.url + "/test/read").status_code == 200
            assert order == ["endpoint returns", "committed", "response validated"]
            assert httpx.post(server.url + "/test/write?bad=true").status_code == 500
            with db.read_transaction() as s:
                assert s.get(ApiKeyModel, world.key_ids[0]).name == "k0"
            assert httpx.post(server.url + "/test/write").status_code == 200
            with db.read_transaction() as s:
                assert s.get(ApiKeyModel, world.key_ids[0]).name == "written"
    finally:
        event.remove(db.engine, "commit", committed)


def test_a_get_that_changes_an_orm_object_is_a_500_and_writes_nothing(db: Database) -> None:
    """Ended in the endpoint's thread, a read-only transaction still refuses to flush."""
    world = make_world(db, 1)
    ctx = build_context(make_settings(db), db)
    app = create_app(ctx)
    router = APIRouter(route_class=RequestRoute)

    @router.get("/test/rename", response_model=Small, dependencies=[PUBLIC])
    def rename(session: DbSession) -> Small:
        session.get(ApiKeyModel, world.key_ids[0]).name = "renamed"
        return Small(status="ok")

    app.include_router(router)
    with LiveServer(ctx, app=app) as server:
        assert httpx.get(server.url + "/test/rename").status_code == 500
        assert httpx.get(f"{server.url}/projects/{world.project_id}",
                         headers=bearer(world.keys[0])).status_code == 200
    with db.read_transaction() as s:
        assert s.get(ApiKeyModel, world.key_ids[0]).name == "k0"


# --- last_used_at, coalesced --------------------------------------------------------------


def test_last_used_at_is_recorded_coalesced_off_the_request_path(db: Database) -> None:
    """Many requests on a few credentials (API keys and a login session): last_used_at is
    written by the flusher, in one UPDATE per table, once per credential and minute."""
    world = make_world(db, 3)
    ctx = build_context(make_settings(db, last_used_flush_interval_seconds=0.3), db)
    with LiveServer(ctx) as server, httpx.Client(base_url=server.url) as client:
        login = client.post("/auth/login", json={"email": "root@example.org",
                                                 "password": PASSWORD})
        session_token = login.json()["token"]
        params: list[str] = []
        with statements(db, params) as seen:
            for _ in range(10):
                for token in (*world.keys, session_token):
                    r = client.get(f"/projects/{world.project_id}", headers=bearer(token))
                    assert r.status_code == 200
            deadline = time.monotonic() + 10
            while ctx.credential_usage.pending() or not any(
                    s.startswith("UPDATE AUTH_SESSIONS") for s in seen):
                assert time.monotonic() < deadline, "the uses were never written"
                time.sleep(0.1)
            with db.transaction() as s:
                first = {k: s.get(ApiKeyModel, k).last_used_at for k in world.key_ids}
                sess = s.scalar(select(AuthSessionModel))
                assert sess is not None and sess.last_used_at is not None
            assert all(first.values())
            # Within the minute, more use writes nothing more.
            for token in world.keys:
                client.get(f"/projects/{world.project_id}", headers=bearer(token))
            time.sleep(1)
            assert ctx.credential_usage.pending() == 0
        # 30 requests on 3 keys, 10 on a session: each credential written once (a flush
        # writes all it holds in one statement per table).
        updates = [p for s, p in zip(seen, params, strict=True)
                   if s.startswith(("UPDATE API_KEYS", "UPDATE AUTH_SESSIONS"))]
        for key in (*world.key_ids, sess.id):
            assert sum(key in p for p in updates) == 1, (key, updates)
    with db.transaction() as s:
        assert {k: s.get(ApiKeyModel, k).last_used_at for k in world.key_ids} == first


def test_a_flush_never_moves_last_used_at_backwards(db: Database) -> None:
    """Two API processes flush in any order: the older time does not win."""
    world = make_world(db, 1)
    key = world.key_ids[0]
    with db.transaction() as s:
        stored = s.get(ApiKeyModel, key).created_at
    late, early = iam.CredentialUsage(), iam.CredentialUsage()
    late.note(ApiKeyModel, key, None, stored.replace(year=stored.year + 1))
    early.note(ApiKeyModel, key, None, stored)
    assert late.flush(db) == 1 and early.flush(db) == 1
    with db.transaction() as s:
        assert s.get(ApiKeyModel, key).last_used_at == stored.replace(year=stored.year + 1)


def test_a_failed_flush_keeps_the_uses_for_the_next(db: Database, tmp_path) -> None:
    """A flush that cannot write (here: a database without the table) loses nothing; the
    next flush to a working database writes them."""
    world = make_world(db, 1)
    usage = iam.CredentialUsage()
    now = utcnow()
    usage.note(ApiKeyModel, world.key_ids[0], None, now)
    broken = Database(f"sqlite:///{tmp_path / 'empty.db'}")
    try:
        with pytest.raises(DBAPIError):
            usage.flush(broken)
    finally:
        broken.dispose()
    assert usage.pending() == 1
    assert usage.flush(db) == 1
    with db.transaction() as s:
        assert s.get(ApiKeyModel, world.key_ids[0]).last_used_at == now


# --- capacity: slots, pool, fast 503 ------------------------------------------------------


def _blocking_app(ctx: AppContext, release: threading.Event, entered: threading.Semaphore):
    """The app plus GET /test/hold: holds its request's session until ``release``."""
    app = create_app(ctx)

    def hold(session: DbSession) -> dict[str, str]:
        session.execute(text("SELECT 1"))
        entered.release()
        release.wait(30)
        return {"held": "yes"}

    app.add_api_route("/test/hold", hold, methods=["GET"], dependencies=[PUBLIC])
    return app


def test_requests_beyond_the_slots_get_a_fast_503_with_retry_after(db: Database) -> None:
    """Every request slot held: the next request waits the pool timeout (1 s here), then
    gets a 503 problem with Retry-After; it never hangs. The slots free, requests succeed."""
    world = make_world(db, 1)
    small = Database(db.url, pool_size=4, pool_timeout=1.0)
    try:
        ctx = build_context(make_settings(small), small)
        slots = concurrency(small).request_slots
        assert slots < small.pool_size  # a reserve stays for background work
        release, entered = threading.Event(), threading.Semaphore(0)
        with LiveServer(ctx, app=_blocking_app(ctx, release, entered)) as server, \
                ThreadPoolExecutor(slots) as pool:
            held = [pool.submit(httpx.get, server.url + "/test/hold", timeout=30)
                    for _ in range(slots)]
            for _ in range(slots):
                assert entered.acquire(timeout=15)
            t0 = time.monotonic()
            r = httpx.get(f"{server.url}/projects/{world.project_id}",
                          headers=bearer(world.keys[0]), timeout=15)
            waited = time.monotonic() - t0
            assert r.status_code == 503, r.text
            assert r.headers["retry-after"] == "1"
            assert r.headers["content-type"].startswith("application/problem+json")
            assert r.json()["type"].endswith(":overloaded")
            assert 0.9 <= waited < 5
            # Requests that need no database are still served.
            assert httpx.get(server.url + "/healthz", timeout=5).status_code == 200
            release.set()
            assert all(f.result().status_code == 200 for f in held)
            assert httpx.get(f"{server.url}/projects/{world.project_id}",
                             headers=bearer(world.keys[0])).status_code == 200
    finally:
        release.set()
        small.dispose()


def test_an_empty_pool_is_a_fast_503_not_a_hang(db: Database) -> None:
    """Every pooled connection taken outside the request slots (here, by the test): a
    request waits the pool timeout, then 503 with Retry-After (login and /readyz included)."""
    make_world(db, 1)
    small = Database(db.url, pool_size=3, pool_timeout=1.0)
    try:
        ctx = build_context(make_settings(small), small)
        with LiveServer(ctx) as server:
            taken = [small.read_engine.connect() for _ in range(small.pool_size)]
            for c in taken:
                c.execute(text("SELECT 1"))
            try:
                for method, path, body in (("POST", "/auth/login", {
                        "email": "root@example.org", "password": PASSWORD}),
                                           ("GET", "/readyz", None)):
                    t0 = time.monotonic()
                    r = httpx.request(method, server.url + path, json=body, timeout=15)
                    assert r.status_code == 503, (path, r.text)
                    assert r.headers["retry-after"] == "1"
                    assert time.monotonic() - t0 < 5
            finally:
                for c in taken:
                    c.close()
            assert httpx.get(server.url + "/readyz").status_code == 200
    finally:
        small.dispose()


# --- 50 clients at once --------------------------------------------------------------------

CLIENTS = 50
LOAD_SECONDS = 3.0
STALL_SECONDS = 5.0


@pytest.mark.parametrize("tokens", ["distinct", "shared"])
def test_fifty_concurrent_clients_see_no_error_and_no_stall(db: Database, tokens: str) -> None:
    """50 clients at once, each with its own API key or all with one: GETs of the project and
    of /auth/me, plus a few writers renaming the project (SQLite serializes them), for a few
    seconds over loopback. No error, no request slower than 5 s, every client served. Today
    SQLite answered nothing for 15-20 s, and PostgreSQL too on a shared token."""
    world = make_world(db, CLIENTS if tokens == "distinct" else 1)
    ctx = build_context(make_settings(db), db)
    writers = 3
    with LiveServer(ctx) as server:
        start = threading.Barrier(CLIENTS)

        def client(i: int) -> tuple[int, list[str], float]:
            token = world.keys[i % len(world.keys)]
            done, errors, slowest = 0, [], 0.0
            with httpx.Client(base_url=server.url, timeout=STALL_SECONDS * 3,
                              headers=bearer(world.admin_key if i < writers else token)) as c:
                start.wait(30)  # all 50 at once
                stop = time.monotonic() + LOAD_SECONDS
                while done == 0 or time.monotonic() < stop:
                    t0 = time.monotonic()
                    if i < writers:
                        r = c.patch(f"/projects/{world.project_id}", json={"name": f"w{done}"})
                    elif done % 4 == 3:
                        r = c.get("/auth/me")
                    else:
                        r = c.get(f"/projects/{world.project_id}")
                    slowest = max(slowest, time.monotonic() - t0)
                    if r.status_code != 200:
                        errors.append(f"{r.status_code} {r.text[:200]}")
                    done += 1
            return done, errors, slowest

        with ThreadPoolExecutor(CLIENTS) as pool:
            results = list(pool.map(client, range(CLIENTS)))
    errors = [e for _, errs, _ in results for e in errs]
    assert errors == []
    assert max(s for _, _, s in results) < STALL_SECONDS
    assert all(done > 0 for done, _, _ in results)
