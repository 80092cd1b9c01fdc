"""The reusable Idempotency-Key dependency, on both databases."""

from __future__ import annotations

import threading

import httpx
from fastapi import FastAPI
from fastapi.testclient import TestClient
from pydantic import BaseModel

from aicloud.api import create_app
from aicloud.api.authz import PUBLIC
from aicloud.api.deps import DbSession
from aicloud.api.idempotency import Idempotency
from aicloud.platform import iam
from aicloud.runtime import AppContext
from aicloud.shared.db import Database
from tests.conftest import LiveServer


class NewUser(BaseModel):
    email: str


def _app(ctx: AppContext) -> FastAPI:
    app = create_app(ctx)

    @app.post("/_test/users", status_code=201, dependencies=[PUBLIC])
    def create(body: NewUser, session: DbSession, idem: Idempotency):  # type: ignore[no-untyped-def]
        return idem.respond(session, lambda: iam.User.model_validate(
            iam.create_user(session, email=body.email), from_attributes=True), status_code=201)

    return app


def _count(db: Database) -> int:
    with db.transaction() as s:
        return iam.count_users(s)


def test_same_key_same_body_replays_without_a_second_effect(ctx: AppContext) -> None:
    with TestClient(_app(ctx)) as c:
        first = c.post("/_test/users", json={"email": "a@x.io"}, headers={"Idempotency-Key": "k1"})
        again = c.post("/_test/users", json={"email": "a@x.io"}, headers={"Idempotency-Key": "k1"})
    assert first.status_code == again.status_code == 201
    assert first.json() == again.json()
    assert again.headers["idempotent-replayed"] == "true"
    assert _count(ctx.db) == 1


def test_same_key_different_body_is_422(ctx: AppContext) -> None:
    with TestClient(_app(ctx)) as c:
        c.post("/_test/users", json={"email": "a@x.io"}, headers={"Idempotency-Key": "k1"})
        resp = c.post("/_test/users", json={"email": "b@x.io"}, headers={"Idempotency-Key": "k1"})
    assert resp.status_code == 422
    assert resp.json()["type"] == "urn:aicloud:problem:idempotency-key-reused"
    assert _count(ctx.db) == 1


def test_a_failed_request_does_not_burn_the_key(ctx: AppContext) -> None:
    with TestClient(_app(ctx)) as c:
        c.post("/_test/users", json={"email": "a@x.io"})
        failed = c.post("/_test/users", json={"email": "a@x.io"}, headers={"Idempotency-Key": "k"})
        assert failed.status_code == 409
        # the failure rolled back with its transaction: the key is still free
        with ctx.db.transaction() as s:
            from aicloud.shared.idempotency import IdempotencyKeyModel

            assert s.get(IdempotencyKeyModel, ("anonymous", "k")) is None


def test_without_a_key_requests_are_independent(ctx: AppContext) -> None:
    with TestClient(_app(ctx)) as c:
        assert c.post("/_test/users", json={"email": "a@x.io"}).status_code == 201
        assert c.post("/_test/users", json={"email": "b@x.io"}).status_code == 201
    assert _count(ctx.db) == 2


def test_bad_keys_are_rejected(ctx: AppContext) -> None:
    with TestClient(_app(ctx)) as c:
        resp = c.post("/_test/users", json={"email": "a@x.io"},
                      headers={"Idempotency-Key": "x" * 300})
    assert resp.status_code == 422
    assert _count(ctx.db) == 0


def test_concurrent_retries_have_one_effect(ctx: AppContext) -> None:
    """Eight clients race with one key over real HTTP: one user, eight identical answers."""
    server = LiveServer(ctx, app=_app(ctx))
    results: list[httpx.Response] = []
    lock = threading.Lock()

    def hit() -> None:
        r = httpx.post(server.url + "/_test/users", json={"email": "race@x.io"},
                       headers={"Idempotency-Key": "race"}, timeout=30)
        with lock:
            results.append(r)

    with server:
        threads = [threading.Thread(target=hit) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert _count(ctx.db) == 1
    ok = [r for r in results if r.status_code == 201]
    in_progress = [r for r in results if r.status_code == 409]
    assert len(ok) + len(in_progress) == 8 and ok
    assert all(r.json() == ok[0].json() for r in ok)
    assert all(r.json()["type"].endswith("idempotency-in-progress") for r in in_progress)
