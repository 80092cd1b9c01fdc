"""A running digest of the ledger's transfers, signed into audit checkpoints.

``digest_n = SHA-256(digest_{n-1} + "\\n" + canonical JSON of transfer n)`` over the transfers
in seq order, starting from 64 zeros, with the count, the last seq and its transfer's id
beside it. A checkpoint
carries the state forward (``advance_ledger_digest`` reads only the transfers after the previous
point), while ``ledger check --against`` recomputes it from scratch (``ledger_digests_at``) and
compares it with every published one: an amount edited, a transfer forged or moved to another
account, or transfers removed below a published point, all change it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass
from datetime import UTC
from typing import Any

from sqlalchemy import Table, select, text
from sqlalchemy.orm import Session

from aicloud.platform import audit
from aicloud.platform.billing.models import TransferModel

TRANSFERS: Table = TransferModel.__table__  # type: ignore[assignment]
GENESIS = "0" * 64
BATCH = 5000


@dataclass(frozen=True)
class LedgerDigest:
    transfers: int
    last_seq: int
    digest: str
    # The id of the transfer at last_seq: SQLite hands a deleted last seq out again, so the
    # seq alone cannot show that the transfer a digest ends with is still the same one.
    last_id: str = ""

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> LedgerDigest:
        return cls(int(d["transfers"]), int(d["last_seq"]), str(d["digest"]),
                   str(d.get("last_id", "")))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


EMPTY = LedgerDigest(0, 0, GENESIS)


def transfer_line(row: Any) -> str:
    """Canonical JSON of every column of a transfer (what the digest commits to)."""
    body = {c.name: getattr(row, c.name) for c in TRANSFERS.columns}
    body["posted_at"] = body["posted_at"].astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _step(digest: str, row: Any) -> str:
    return hashlib.sha256((digest + "\n" + transfer_line(row)).encode()).hexdigest()


def _rows(session: Session, after: int | None, upto: int | None = None) -> Iterator[Any]:
    """Transfers with seq > after (all when None) and <= upto, in seq order, a batch per
    query."""
    while True:
        stmt = select(TRANSFERS)
        if after is not None:
            stmt = stmt.where(TRANSFERS.c.seq > after)
        if upto is not None:
            stmt = stmt.where(TRANSFERS.c.seq <= upto)
        rows = session.execute(stmt.order_by(TRANSFERS.c.seq).limit(BATCH)).all()
        yield from rows
        if len(rows) < BATCH:
            return
        after = rows[-1].seq


def lock_ledger_for_digest(session: Session) -> None:
    """Wait for transfers being posted to commit, and hold new ones until this transaction
    ends. Without it, a transfer given a lower seq but committed after the checkpoint read
    would later appear below a signed point (PostgreSQL hands out seqs before commit).
    SQLite's writers are already serialized (BEGIN IMMEDIATE). Posters take this table's lock
    before the audit head's, so taking it before the head lock cannot deadlock."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text(f"LOCK TABLE {TRANSFERS.name} IN SHARE MODE"))


def advance_ledger_digest(session: Session, previous: Mapping[str, Any] | None) -> dict[str, Any]:
    """The digest now, from ``previous`` (a state signed earlier) or from scratch."""
    state = LedgerDigest.from_dict(previous) if previous else EMPTY
    if state.transfers and session.scalar(
            select(TRANSFERS.c.id).where(TRANSFERS.c.seq == state.last_seq)) != state.last_id:
        # The key must not carry a signed digest forward over a ledger that lost its end.
        raise audit.AuditChainBroken(
            f"refusing to sign: the last signed ledger digest covers {state.transfers} "
            f"transfer(s) up to seq {state.last_seq}, and transfer {state.last_seq} "
            f"({state.last_id}) is gone: transfers were deleted; run `aicloud ledger check "
            "--against` with the anchor sink")
    digest, count, last, last_id = state.digest, state.transfers, state.last_seq, state.last_id
    for row in _rows(session, last if previous else None):
        digest, count, last, last_id = _step(digest, row), count + 1, row.seq, row.id
    return LedgerDigest(count, last, digest, last_id).to_dict()


def ledger_digests_at(session: Session, points: Iterable[int]) -> dict[int, LedgerDigest]:
    """The digest recomputed from scratch at each seq in ``points``, in one pass."""
    wanted = sorted(set(points))
    out: dict[int, LedgerDigest] = {}
    if not wanted:
        return out
    state = EMPTY
    i = 0
    for row in _rows(session, None, wanted[-1]):
        while i < len(wanted) and row.seq > wanted[i]:
            out[wanted[i]] = state
            i += 1
        state = LedgerDigest(state.transfers + 1, row.seq, _step(state.digest, row), row.id)
    for point in wanted[i:]:
        out[point] = state
    return out
