"""The public HTTP client of the AI Cloud API (used by the CLI, the App SDK and scripts)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx


class ApiError(Exception):
    """An error answer from the API, carrying its RFC 9457 problem document."""

    def __init__(self, status: int, problem: dict[str, Any]):
        self.status = status
        self.problem = problem
        title = problem.get("title") or f"HTTP {status}"
        detail = problem.get("detail")
        super().__init__(f"{title}: {detail}" if detail and detail != title else title)

    @property
    def type(self) -> str | None:
        return self.problem.get("type")

    @property
    def request_id(self) -> str | None:
        return self.problem.get("request_id")


class ApiClient:
    def __init__(self, base_url: str, token: str | None = None, *, timeout: float = 30.0,
                 transport: httpx.BaseTransport | None = None):
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.base_url = base_url.rstrip("/")
        self._http = httpx.Client(base_url=self.base_url, headers=headers, timeout=timeout,
                                  transport=transport)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> ApiClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def request(self, method: str, path: str, *, json: Any = None,
                params: dict[str, Any] | None = None,
                idempotency_key: str | None = None) -> Any:
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else None
        response = self._http.request(method, path, json=json, params=params, headers=headers)
        if response.status_code >= 400:
            try:
                problem = response.json()
                if not isinstance(problem, dict):
                    raise ValueError
            except ValueError:
                problem = {"title": f"HTTP {response.status_code}", "detail": response.text[:500]}
            raise ApiError(response.status_code, problem)
        if response.status_code == 204 or not response.content:
            return None
        return response.json()

    def get_text(self, path: str, **params: Any) -> str:
        """A GET whose answer is not JSON (CSV exports); problems still raise ApiError."""
        query = {k: v for k, v in params.items() if v is not None}
        response = self._http.get(path, params=query)
        if response.status_code >= 400:
            self.request("GET", path, params=query)  # raises the parsed problem
        return response.text

    def get(self, path: str, **params: Any) -> Any:
        return self.request("GET", path, params={k: v for k, v in params.items() if v is not None})

    def post(self, path: str, json: Any = None, *, idempotency_key: str | None = None) -> Any:
        return self.request("POST", path, json=json, idempotency_key=idempotency_key)

    def patch(self, path: str, json: Any = None) -> Any:
        return self.request("PATCH", path, json=json)

    def put(self, path: str, json: Any = None) -> Any:
        return self.request("PUT", path, json=json)

    def delete(self, path: str) -> Any:
        return self.request("DELETE", path)

    def iterate(self, path: str, **params: Any) -> Iterator[Any]:
        """Every item of a cursor-paginated list, page after page."""
        cursor = None
        while True:
            page = self.get(path, **params, cursor=cursor)
            yield from page["items"]
            cursor = page.get("next_cursor")
            if not cursor:
                return
