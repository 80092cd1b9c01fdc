"""Domain errors. The API turns each into an RFC 9457 problem with a stable ``type``.

Services raise these; they never build HTTP responses themselves.
"""

from __future__ import annotations

from typing import Any

PROBLEM_TYPE_BASE = "urn:aicloud:problem:"


class AppError(Exception):
    """Base of every error a client may see. ``code`` is the stable part of the type URI."""

    status: int = 400
    code: str = "bad-request"
    title: str = "Bad request"

    def __init__(self, detail: str | None = None, **extra: Any):
        super().__init__(detail or self.title)
        self.detail = detail or self.title
        self.extra = extra

    @property
    def type_uri(self) -> str:
        return PROBLEM_TYPE_BASE + self.code


class ValidationFailed(AppError):
    status, code, title = 422, "validation-failed", "The request is not valid"


class NotFound(AppError):
    status, code, title = 404, "not-found", "Not found"


class Conflict(AppError):
    status, code, title = 409, "conflict", "Conflict with the current state"


class Unauthenticated(AppError):
    status, code, title = 401, "unauthenticated", "Authentication required"


class Forbidden(AppError):
    status, code, title = 403, "forbidden", "Not allowed"


class TooManyRequests(AppError):
    status, code, title = 429, "too-many-requests", "Too many requests"


class IdempotencyKeyReused(AppError):
    status, code, title = (
        422,
        "idempotency-key-reused",
        "The Idempotency-Key was already used with a different request",
    )


class IdempotencyInProgress(AppError):
    status, code, title = (
        409,
        "idempotency-in-progress",
        "A request with this Idempotency-Key is still being processed",
    )


class ServiceUnavailable(AppError):
    status, code, title = 503, "unavailable", "Service unavailable"


class Overloaded(ServiceUnavailable):
    """The server has no capacity for the request right now; the client should retry after
    ``retry_after_seconds`` (sent as Retry-After)."""

    code, title = "overloaded", "The server is busy"

    def __init__(self, detail: str | None = None, *, retry_after_seconds: int = 1,
                 **extra: Any):
        super().__init__(detail, **extra)
        self.retry_after_seconds = retry_after_seconds
