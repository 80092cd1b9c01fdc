"""The ``Idempotency-Key`` dependency, reusable by any POST that creates or spends.

Usage in a route::

    def create_thing(body: ThingIn, session: DbSession, idem: Idempotency):
        return idem.respond(session, lambda: service.create(session, body), status_code=201)

A retry with the same key and body gets the stored response (``Idempotent-Replayed: true``);
the same key with a different body is a 422 problem.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

from fastapi import Depends, Header, Request
from fastapi.encoders import jsonable_encoder
from fastapi.responses import JSONResponse
from sqlalchemy.orm import Session

from aicloud.shared import idempotency as store

ANONYMOUS_SCOPE = "anonymous"


class IdempotentRequest:
    def __init__(self, request: Request, key: str | None, body: bytes):
        self.request = request
        self.key = key
        self.body = body

    @property
    def scope(self) -> str:
        principal = getattr(self.request.state, "principal", None)
        return principal.id if principal is not None else ANONYMOUS_SCOPE

    def respond(
        self, session: Session, produce: Callable[[], Any], *, status_code: int = 200
    ) -> JSONResponse:
        headers: dict[str, str] = {}
        if self.key is not None:
            fp = store.fingerprint(self.request.method, self.request.url.path, self.body)
            stored = store.claim(
                session, scope=self.scope, key=self.key, method=self.request.method,
                path=self.request.url.path, fp=fp,
            )
            if stored is not None:
                return JSONResponse(
                    stored.body, status_code=stored.status_code,
                    headers={"Idempotency-Key": self.key, "Idempotent-Replayed": "true"},
                )
            headers["Idempotency-Key"] = self.key
        body = jsonable_encoder(produce())
        if self.key is not None:
            store.complete(session, scope=self.scope, key=self.key, status_code=status_code,
                           body=body)
        return JSONResponse(body, status_code=status_code, headers=headers)


async def idempotency(
    request: Request,
    idempotency_key: Annotated[
        str | None,
        Header(description="Makes the request safe to retry: the same key returns the same "
                           "response", max_length=store.MAX_KEY_LENGTH),
    ] = None,
) -> IdempotentRequest:
    if idempotency_key is not None:
        store.validate_key(idempotency_key)
    return IdempotentRequest(request, idempotency_key, await request.body())


Idempotency = Annotated[IdempotentRequest, Depends(idempotency)]
