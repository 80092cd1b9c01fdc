"""Is a configured secret strong enough for a strict profile?

We cannot know how a secret was made, so we estimate from the string itself and err towards
refusing: at least 32 bytes, and at least 128 bits by the estimate below. The estimate is the
string's length times the smaller of two per-character Shannon entropies, of the characters
and of the steps between neighbouring characters, so ``aaaa…`` (no variety) and ``abcd…``
(one constant step) score near zero; a string that repeats a shorter unit scores as the unit.
It over-rates English passphrases, so well-known placeholder words are refused outright.
A ``secrets.token_urlsafe(32)`` (43 characters) estimates at about 200 bits.
"""

from __future__ import annotations

import itertools
import math
import re
from collections import Counter

MIN_SECRET_BYTES = 32
MIN_SECRET_BITS = 128
HOW_TO_GENERATE = 'python -c "import secrets; print(secrets.token_urlsafe(32))"'

# Compared after lower-casing and dropping everything but letters and digits.
_PLACEHOLDER_WORDS = (
    "changeme", "changethis", "replaceme", "insecure", "password", "passw0rd", "example",
    "default", "secretkey", "mysecret", "yoursecret", "letmein", "notasecret",
)


def _shannon_bits_per_symbol(symbols: list[int]) -> float:
    if not symbols:
        return 0.0
    counts = Counter(symbols)
    n = len(symbols)
    return 0.0 - sum(c / n * math.log2(c / n) for c in counts.values())  # never -0.0


def _shortest_period(value: str) -> int:
    """The length of the shortest unit that ``value`` repeats (len(value) if none)."""
    n = len(value)
    for p in range(1, n // 2 + 1):
        if all(value[i] == value[i - p] for i in range(p, n)):
            return p
    return n


def estimated_bits(value: str) -> float:
    unit = value[: _shortest_period(value)]
    codes = [ord(c) for c in unit]
    steps = [b - a for a, b in itertools.pairwise(codes)]
    per_char = _shannon_bits_per_symbol(codes)
    if len(steps) >= 2:
        per_char = min(per_char, _shannon_bits_per_symbol(steps))
    return len(unit) * per_char


def weak_secret_reason(value: str) -> str | None:
    """Why ``value`` is too weak to be a production secret, or None when it is acceptable."""
    if not value:
        return "is empty"
    normalized = re.sub(r"[^a-z0-9]", "", value.lower())
    for word in _PLACEHOLDER_WORDS:
        if word in normalized:
            return f"contains the well-known placeholder {word!r}"
    size = len(value.encode())
    if size < MIN_SECRET_BYTES:
        return f"is {size} bytes long; at least {MIN_SECRET_BYTES} are required"
    bits = estimated_bits(value)
    if bits < MIN_SECRET_BITS:
        return (f"has an estimated entropy of {bits:.0f} bits (repeated or low-variety "
                f"characters); at least {MIN_SECRET_BITS} are required")
    return None


# A raw 32-byte key cannot estimate much above 150 bits by this method even when random
# (32 samples of 256 values), so raw keys are held to a lower bar that still catches
# patterned keys (all zeros, 0..31, a repeated byte pair): random draws stay above 130.
MIN_RAW_KEY_BITS = 96


def weak_raw_key_reason(raw: bytes) -> str | None:
    """Why a raw key (e.g. an Ed25519 private key) is evidently not random, or None."""
    bits = estimated_bits(raw.decode("latin-1"))
    if bits < MIN_RAW_KEY_BITS:
        return (f"is not random (an estimated {bits:.0f} bits: repeated bytes or a "
                "sequence)")
    return None
