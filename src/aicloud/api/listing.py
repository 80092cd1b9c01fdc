"""Cursor pagination for list routes (opaque cursors from aicloud.shared.pagination)."""

from __future__ import annotations

import bisect
from collections.abc import Callable, Sequence
from typing import Annotated, Any, TypeVar

from fastapi import Query

from aicloud.shared.pagination import (
    DEFAULT_LIMIT,
    MAX_LIMIT,
    Page,
    decode_cursor,
    encode_cursor,
)

T = TypeVar("T")
Limit = Annotated[int, Query(ge=1, le=MAX_LIMIT, description="Page size")]
Cursor = Annotated[str | None, Query(description="next_cursor of the previous page")]
DEFAULT = DEFAULT_LIMIT


def after(cursor: str | None) -> str | None:
    return decode_cursor(cursor) if cursor else None


def page_of_ids(ids: Sequence[str], cursor: str | None, limit: int) -> tuple[list[str],
                                                                            str | None]:
    """A page of an already sorted, already filtered id list."""
    start = bisect.bisect_right(ids, after(cursor)) if cursor else 0
    chunk = list(ids[start:start + limit])
    more = start + limit < len(ids)
    return chunk, encode_cursor(chunk[-1]) if more and chunk else None


def page(fetch: Callable[[str | None, int], list[Any]], cursor: str | None,
         limit: int) -> Page[Any]:
    """Ask ``fetch(after, limit + 1)`` for one more row than the page to know if more exist."""
    rows = fetch(after(cursor), limit + 1)
    if len(rows) > limit:
        rows = rows[:limit]
        return Page(items=rows, next_cursor=encode_cursor(rows[-1].id))
    return Page(items=rows, next_cursor=None)
