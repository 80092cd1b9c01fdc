"""Every error is RFC 9457 problem+json with a stable type and a request id."""

from __future__ import annotations

import logging

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from pydantic import BaseModel

from aicloud.api import create_app
from aicloud.api.authz import PUBLIC
from aicloud.runtime import AppContext
from aicloud.shared.errors import Conflict


class Body(BaseModel):
    n: int


def _app_with_failing_routes(ctx: AppContext) -> FastAPI:
    app = create_app(ctx)

    @app.get("/_test/boom", dependencies=[PUBLIC])
    def boom() -> None:
        raise RuntimeError("secret internal detail")

    @app.get("/_test/conflict", dependencies=[PUBLIC])
    def conflict() -> None:
        raise Conflict("the thing is busy", thing="t1")

    @app.post("/_test/validate", dependencies=[PUBLIC])
    def validate(body: Body) -> Body:
        return body

    return app


def _is_problem(resp, status: int, code: str) -> dict:  # type: ignore[no-untyped-def]
    assert resp.status_code == status
    assert resp.headers["content-type"].startswith("application/problem+json")
    body = resp.json()
    assert body["type"] == f"urn:aicloud:problem:{code}"
    assert body["status"] == status
    assert body["request_id"] == resp.headers["x-request-id"]
    assert body["title"] and body["detail"]
    return body


def test_unknown_route_is_a_404_problem(sqlite_ctx: AppContext) -> None:
    with TestClient(create_app(sqlite_ctx)) as c:
        _is_problem(c.get("/nope"), 404, "not-found")


def test_validation_errors_name_the_field(sqlite_ctx: AppContext) -> None:
    with TestClient(_app_with_failing_routes(sqlite_ctx)) as c:
        body = _is_problem(c.post("/_test/validate", json={"n": "x"}), 422, "validation-failed")
        assert body["errors"][0]["loc"] == ["body", "n"]


def test_domain_errors_keep_their_type_and_extras(sqlite_ctx: AppContext) -> None:
    with TestClient(_app_with_failing_routes(sqlite_ctx)) as c:
        body = _is_problem(c.get("/_test/conflict"), 409, "conflict")
        assert body["detail"] == "the thing is busy" and body["thing"] == "t1"


def test_unknown_errors_are_500_without_trace_and_logged_with_request_id(
    sqlite_ctx: AppContext, caplog: pytest.LogCaptureFixture
) -> None:
    with TestClient(_app_with_failing_routes(sqlite_ctx), raise_server_exceptions=False) as c, \
            caplog.at_level(logging.ERROR):
        resp = c.get("/_test/boom")
    body = _is_problem(resp, 500, "internal-error")
    assert "secret internal detail" not in resp.text and "Traceback" not in resp.text
    logged = [r for r in caplog.records if r.exc_info]
    assert logged and "secret internal detail" in str(logged[0].exc_info[1])
    assert body["request_id"].startswith("req_")


def test_a_safe_incoming_request_id_is_kept(sqlite_ctx: AppContext) -> None:
    with TestClient(create_app(sqlite_ctx)) as c:
        assert c.get("/healthz", headers={"X-Request-ID": "abc-123"}).headers[
            "x-request-id"] == "abc-123"
        assert c.get("/healthz", headers={"X-Request-ID": "bad id\n"}).headers[
            "x-request-id"].startswith("req_")
