"""Prefixed, sortable identifiers: ``<prefix>_<ULID>``, e.g. ``org_01JABCDEF...``.

ULIDs sort by creation time, so ids double as a stable pagination key.
"""

from __future__ import annotations

import hashlib
import os
import re
import time

from ulid import ULID, base32

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


# Each random byte maps to one Crockford base32 digit by its low 5 bits (bytes.translate, in C).
# 256 is a multiple of 32, so every digit is uniform and each carries 5 random bits.
_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_BYTE_TO_DIGIT = bytes(ord(_CROCKFORD[b % 32]) for b in range(256))


def new_ids(prefix: str, n: int) -> list[str]:
    """``n`` fresh ids at once, for set-based inserts (much faster than n new_id calls).

    They share one millisecond timestamp; each is a valid ULID with 80 random bits (16
    digits of 5 bits) from the OS generator, like new_id's.
    """
    if not _PREFIX.match(prefix):
        raise ValueError(f"invalid id prefix {prefix!r}: 2-8 lowercase letters or digits")
    head = f"{prefix}_{base32.encode_timestamp(int(time.time() * 1000).to_bytes(6, 'big'))}"
    digits = os.urandom(16 * n).translate(_BYTE_TO_DIGIT).decode()
    return [head + digits[i:i + 16] for i in range(0, 16 * n, 16)]


def int64_key(value: str) -> int:
    """A stable signed 64-bit key for a string (BLAKE2b): what fits a BIGINT index or a
    PostgreSQL advisory lock. Not unique; users must tolerate a collision."""
    return int.from_bytes(hashlib.blake2b(value.encode(), digest_size=8).digest(), "big",
                          signed=True)
