"""verify names the first broken link for every kind of tamper, on SQLite and PostgreSQL.

The attacker has full database rights: the append-only triggers are disabled (or dropped)
while it edits, deletes, inserts or reorders rows with plain SQL.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Connection

from aicloud.platform import audit
from aicloud.platform.audit.chain import GENESIS_HASH
from aicloud.platform.audit.checkpoints import checkpoint_message
from aicloud.platform.audit.signing import SigningKey, generate_key_b64
from aicloud.shared.db import Database
from tests.platform.audit.helpers import (
    CHECKPOINTS,
    EVENTS,
    HEAD,
    TRUSTED,
    attacker,
    checkpoint,
    rehash,
    row,
    seed,
    verify,
    wipe,
)

N = 20


def _brk(db: Database) -> audit.Break:
    result = verify(db)
    assert not result.ok
    assert result.first_break is not None
    return result.first_break


def test_a_clean_chain_verifies_with_its_checkpoints(db: Database) -> None:
    seed(db, 7, per_txn=3)
    checkpoint(db)
    seed(db, 5)
    checkpoint(db)
    result = verify(db, batch_size=4)  # several batches, and batch edges between checkpoints
    assert result.ok, result.first_break
    assert (result.events_checked, result.head_seq, result.checkpoints_checked) == (12, 12, 2)
    assert result.latest_checkpoint_seq == 12
    assert result.last_hash == result.head_hash


def test_an_empty_chain_verifies(db: Database) -> None:
    result = verify(db)
    assert result.ok and result.events_checked == 0 and result.last_hash == GENESIS_HASH


@pytest.mark.parametrize("table", ["audit_events", "audit_checkpoints"])
def test_the_database_refuses_update_and_delete(db: Database, table: str) -> None:
    seed(db, 2)
    checkpoint(db)
    for sql in (f"UPDATE {table} SET seq = seq + 100", f"DELETE FROM {table}"):
        with pytest.raises(sa.exc.DBAPIError, match="append-only"), db.engine.begin() as c:
            c.execute(sa.text(sql))
    assert verify(db).ok


def test_edited_field_is_named(db: Database) -> None:
    ids = seed(db, N)
    with attacker(db) as conn:
        conn.execute(sa.update(EVENTS).where(EVENTS.c.seq == 10).values(outcome="denied"))
    assert _brk(db) == audit.Break("edited", 10, ids[9], _brk(db).message)
    assert "edited" in _brk(db).message


def test_edit_with_recomputed_hash_is_named_at_the_edited_event(db: Database) -> None:
    ids = seed(db, N)
    with attacker(db) as conn:
        r = row(conn, 10)
        r["actor_id"] = "user_scapegoat"
        conn.execute(sa.update(EVENTS).where(EVENTS.c.seq == 10)
                     .values(actor_id=r["actor_id"], hash=rehash(r)))
    brk = _brk(db)
    assert (brk.kind, brk.seq, brk.event_id) == ("edited", 10, ids[9])
    assert "recomputed" in brk.message


def test_a_whole_rewritten_tail_is_caught_by_a_checkpoint(db: Database) -> None:
    """Recomputing every later hash and the head row hides an edit from the chain itself;
    the signed checkpoint still records the original hash."""
    seed(db, 5)
    checkpoint(db)
    seed(db, 10)
    checkpoint(db)
    with attacker(db) as conn:
        prev = row(conn, 7)["prev_hash"]
        for seq in range(7, 16):
            r = row(conn, seq)
            r["prev_hash"] = prev
            if seq == 7:
                r["target_id"] = "t-forged"
            r["hash"] = rehash(r)
            conn.execute(sa.update(EVENTS).where(EVENTS.c.seq == seq).values(
                target_id=r["target_id"], prev_hash=r["prev_hash"], hash=r["hash"]))
            prev = r["hash"]
        conn.execute(sa.update(HEAD).values(hash=prev))
    brk = _brk(db)
    assert (brk.kind, brk.seq) == ("checkpoint_mismatch", 15)
    assert "6..15" in brk.message  # between the last good checkpoint and this one


def test_deleted_middle_event_is_named(db: Database) -> None:
    seed(db, N)
    with attacker(db) as conn:
        conn.execute(sa.delete(EVENTS).where(EVENTS.c.seq == 10))
    brk = _brk(db)
    assert (brk.kind, brk.seq, brk.event_id) == ("deleted", 10, None)


def test_deleted_last_event_is_caught_by_the_head_row(db: Database) -> None:
    seed(db, N)
    with attacker(db) as conn:
        conn.execute(sa.delete(EVENTS).where(EVENTS.c.seq == N))
    brk = _brk(db)
    assert (brk.kind, brk.seq) == ("deleted", N)
    assert "head row" in brk.message


def test_deleted_tail_with_rolled_back_head_is_caught_by_the_checkpoint(db: Database) -> None:
    seed(db, N)
    checkpoint(db)
    with attacker(db) as conn:
        conn.execute(sa.delete(EVENTS).where(EVENTS.c.seq > N - 3))
        conn.execute(sa.update(HEAD).values(seq=N - 3, hash=row(conn, N - 3)["hash"]))
    brk = _brk(db)
    assert (brk.kind, brk.seq) == ("deleted", N - 2)
    assert "checkpoint" in brk.message


def test_rolled_back_head_alone_is_named(db: Database) -> None:
    ids = seed(db, N)
    with attacker(db) as conn:
        conn.execute(sa.update(HEAD).values(seq=N - 2, hash=row(conn, N - 2)["hash"]))
    brk = _brk(db)
    assert (brk.kind, brk.seq, brk.event_id) == ("inserted", N - 1, ids[N - 2])
    _sealing_is_refused(db, r"2 event\(s\) lie beyond it")


def _sealing_is_refused(db: Database, why: str) -> None:
    """Writers never touch the chain, so the change and its event still commit; the sealer
    fails closed and leaves the event unsealed (verify names it once it is old)."""
    [kept] = seed(db, 1, seal=False)
    with pytest.raises(audit.AuditChainBroken, match=why):
        audit.seal_pending(db)
    with db.transaction() as s:
        assert s.scalar(sa.select(EVENTS.c.seq).where(EVENTS.c.id == kept)) is None


def test_deleted_head_row_is_named_and_appending_is_refused(db: Database) -> None:
    seed(db, 3)
    with attacker(db) as conn:
        conn.execute(sa.delete(HEAD))
    assert _brk(db).kind == "head_missing"
    _sealing_is_refused(db, "head row is missing")


def _forge(conn: Connection, seq: int) -> str:
    """A well-formed event that chains onto event ``seq - 1``, as an intruder would write."""
    prev = row(conn, seq - 1)
    forged = {**prev, "id": "aud_FORGED", "seq": seq, "prev_hash": prev["hash"],
              "target_id": "t-forged", "position": 10_000 + seq}
    forged["hash"] = rehash(forged)
    conn.execute(sa.insert(EVENTS).values(**forged))
    return forged["hash"]


def test_forged_event_inserted_in_the_middle_is_named(db: Database) -> None:
    seed(db, N)
    with attacker(db) as conn:
        for seq in range(N, 9, -1):  # make room at 10, one row at a time (unique seq)
            conn.execute(sa.update(EVENTS).where(EVENTS.c.seq == seq).values(seq=seq + 1))
        _forge(conn, 10)
        conn.execute(sa.update(HEAD).values(seq=N + 1))
    brk = _brk(db)
    assert (brk.kind, brk.seq, brk.event_id) == ("inserted", 10, "aud_FORGED")


def test_forged_event_appended_past_the_head_is_named(db: Database) -> None:
    seed(db, N)
    with attacker(db) as conn:
        _forge(conn, N + 1)
    brk = _brk(db)
    assert (brk.kind, brk.seq, brk.event_id) == ("inserted", N + 1, "aud_FORGED")


def _swap(conn: Connection, a: int, b: int) -> None:
    ida, idb = row(conn, a)["id"], row(conn, b)["id"]
    conn.execute(sa.update(EVENTS).where(EVENTS.c.id == ida).values(seq=-1))
    conn.execute(sa.update(EVENTS).where(EVENTS.c.id == idb).values(seq=a))
    conn.execute(sa.update(EVENTS).where(EVENTS.c.id == ida).values(seq=b))


@pytest.mark.parametrize(("a", "b"), [(10, 11), (5, 15)])
def test_reordered_events_are_named(db: Database, a: int, b: int) -> None:
    ids = seed(db, N)
    with attacker(db) as conn:
        _swap(conn, a, b)
    brk = _brk(db)
    assert (brk.kind, brk.seq, brk.event_id) == ("reordered", a, ids[b - 1])


def test_checkpoint_signed_by_another_key_is_forged(db: Database) -> None:
    seed(db, N)
    checkpoint(db)
    rogue = SigningKey.from_b64(generate_key_b64())
    with attacker(db) as conn:
        last = row(conn, N)
        signed_at = conn.execute(sa.select(CHECKPOINTS.c.signed_at)).scalar_one()
        sig = rogue.sign(checkpoint_message("ackp_rogue", N, last["hash"], N, signed_at,
                                            rogue.key_id))
        conn.execute(sa.insert(CHECKPOINTS).values(
            id="ackp_rogue", seq=N, head_hash=last["hash"], event_count=N,
            signed_at=signed_at, key_id=rogue.key_id, signature=sig))
    brk = _brk(db)
    assert (brk.kind, brk.seq) == ("checkpoint_forged", N)
    assert "unknown key" in brk.message


def test_edited_checkpoint_fails_its_signature(db: Database) -> None:
    seed(db, 5)
    checkpoint(db)
    seed(db, 5)
    with attacker(db) as conn:  # move the checkpoint forward to bless a rewritten tail
        conn.execute(sa.update(CHECKPOINTS).values(seq=10, event_count=10,
                                                   head_hash=row(conn, 10)["hash"]))
    brk = _brk(db)
    assert (brk.kind, brk.seq) == ("checkpoint_forged", 10)
    assert "invalid signature" in brk.message


def test_checkpoints_of_a_rotated_key_still_verify(db: Database) -> None:
    seed(db, 3)
    checkpoint(db)
    new = SigningKey.from_b64(generate_key_b64())
    only_new = {new.key_id: new.public_key}
    assert audit.verify_chain(db, only_new).first_break.kind == "checkpoint_forged"  # type: ignore[union-attr]
    both = {**only_new, **TRUSTED}
    assert audit.verify_chain(db, both).ok


# --- every position: the four tamper kinds are always detected, at the exact link -----------

M = 6


def _edit(conn: Connection, k: int) -> None:
    conn.execute(sa.update(EVENTS).where(EVENTS.c.seq == k).values(scope_path="/elsewhere"))


def _delete(conn: Connection, k: int) -> None:
    conn.execute(sa.delete(EVENTS).where(EVENTS.c.seq == k))


def _insert(conn: Connection, k: int) -> None:
    for seq in range(M, k - 1, -1):
        conn.execute(sa.update(EVENTS).where(EVENTS.c.seq == seq).values(seq=seq + 1))
    if k == 1:  # a forged first event chains onto genesis
        first = row(conn, 2)
        forged = {**first, "id": "aud_FORGED", "seq": 1, "prev_hash": GENESIS_HASH,
                  "position": 10_000}
        forged["hash"] = rehash(forged)
        conn.execute(sa.insert(EVENTS).values(**forged))
    else:
        _forge(conn, k)
    conn.execute(sa.update(HEAD).values(seq=M + 1))


CASES: dict[str, tuple[Callable[[Connection, int], None], range, Callable[[int], int]]] = {
    # kind: (tamper at k, positions k, expected seq of the first broken link)
    "edited": (_edit, range(1, M + 1), lambda k: k),
    "deleted": (_delete, range(1, M + 1), lambda k: k),
    "inserted": (_insert, range(1, M + 1), lambda k: k),
    "reordered": (lambda c, k: _swap(c, k, k + 1), range(1, M), lambda k: k),
}


@pytest.mark.parametrize("kind", list(CASES))
def test_every_position_of_every_tamper_kind_is_named(db: Database, kind: str) -> None:
    tamper, positions, expected_seq = CASES[kind]
    for k in positions:
        wipe(db)
        seed(db, M)
        checkpoint(db)
        with attacker(db) as conn:
            tamper(conn, k)
        brk = _brk(db)
        assert (brk.kind, brk.seq) == (kind, expected_seq(k)), (k, brk)

