"""Prefixed, sortable identifiers: ``<prefix>_<ULID>``, e.g. ``org_01JABCDEF...``.

ULIDs sort by creation time, so ids double as a stable pagination key.
"""

from __future__ import annotations

import re

from ulid import ULID

_PREFIX = re.compile(r"^[a-z][a-z0-9]{1,7}$")
_ID = re.compile(r"^([a-z][a-z0-9]{1,7})_([0-9A-HJKMNP-TV-Z]{26})$")


def new_id(prefix: str) -> str:
    if not _PREFIX.match(prefix):
        raise ValueError(f"invalid id prefix {prefix!r}: 2-8 lowercase letters or digits")
    return f"{prefix}_{ULID()}"


def id_prefix(value: str) -> str | None:
    """The prefix of a well-formed id, or None when the value is not one."""
    m = _ID.match(value)
    return m.group(1) if m else None


def is_id(value: str, prefix: str) -> bool:
    return id_prefix(value) == prefix
