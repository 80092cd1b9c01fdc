"""Checkpoints published outside the database: what `verify --against` catches that the
database alone cannot (rollbacks, truncation, consistent rewrites), on SQLite and PostgreSQL.

The attacker owns the database (raw SQL, append-only triggers out of the way) but neither the
anchor directory nor the signing key.
"""

from __future__ import annotations

import base64
import json
import os
import stat
from pathlib import Path

import pytest
import sqlalchemy as sa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from aicloud.platform import audit
from aicloud.platform.audit.chain import GENESIS_HASH, canonical_json
from aicloud.runtime import AppContext
from aicloud.shared.db import Database
from tests.platform.audit.helpers import (
    CHECKPOINTS,
    EVENTS,
    HEAD,
    KEY,
    attacker,
    published,
    rehash,
    row,
    seed,
    verify,
    verify_against,
)


def _two_published(actx: AppContext) -> tuple[audit.Checkpoint, audit.Checkpoint]:
    """Events 1..10, checkpoint (published), events 11..20, checkpoint (published)."""
    seed(actx.db, 10, per_txn=5)
    first = actx.audit_checkpoint()
    seed(actx.db, 10, per_txn=5)
    second = actx.audit_checkpoint()
    assert first is not None and second is not None
    assert (first.seq, second.seq, first.ordinal, second.ordinal) == (10, 20, 1, 2)
    return first, second


def _broken(db: Database, sink_dir: Path, kind: str) -> audit.Break:
    assert verify(db).ok, "the database alone cannot tell (that is why the sink exists)"
    result = verify_against(db, sink_dir)
    assert not result.ok and result.first_break is not None
    assert result.first_break.kind == kind, result.first_break
    return result.first_break


def test_a_clean_run_verifies_against_what_was_published(actx: AppContext,
                                                         sink_dir: Path) -> None:
    first, second = _two_published(actx)
    seed(actx.db, 3)  # after the last publication: fine, just not covered yet
    result = verify_against(actx.db, sink_dir)
    assert result.ok, result.first_break
    assert (result.published_checked, result.published_sink) == (2, f"dir:{sink_dir}")
    assert [c.id for c in published(sink_dir).checkpoints] == [first.id, second.id]


def test_published_files_are_atomic_read_only_never_overwritten_and_self_verifying(
        actx: AppContext, sink_dir: Path) -> None:
    first, _ = _two_published(actx)
    names = sorted(os.listdir(sink_dir))
    assert names == [audit.anchors.anchor_name(c) for c in published(sink_dir).checkpoints]
    assert not [n for n in names if n.startswith(".")]  # no temporary file left behind
    path = sink_dir / names[0]
    assert not stat.S_IMODE(path.stat().st_mode) & 0o222  # read-only
    sink = audit.open_sink(f"dir:{sink_dir}")
    assert audit.publish(sink, first) is False  # the same bytes again: nothing to do
    forged = audit.Checkpoint(**{**first.__dict__, "head_hash": "f" * 64})
    with pytest.raises(audit.AnchorConflict, match="never overwritten"):
        audit.publish(sink, forged)
    assert audit.read_published(sink, {KEY.key_id: KEY.public_key}).checkpoints[0] == first

    # A third party needs only the file and the public key: the documented v2 message.
    cp = json.loads(path.read_bytes())["checkpoint"]
    body = {k: v for k, v in cp.items() if k != "signature"}
    message = ("aicloud.audit.checkpoint.v2\n" + canonical_json(body)).encode()
    Ed25519PublicKey.from_public_bytes(base64.b64decode(KEY.public_key_b64)).verify(
        base64.b64decode(cp["signature"]), message)


def test_tail_deleted_and_head_rolled_back(actx: AppContext, sink_dir: Path) -> None:
    seed(actx.db, 20, per_txn=4)
    actx.audit_checkpoint()
    with attacker(actx.db) as conn:  # back to event 12, as if nothing more ever happened
        conn.execute(sa.delete(CHECKPOINTS))
        conn.execute(sa.delete(EVENTS).where(EVENTS.c.seq > 12))
        conn.execute(sa.update(HEAD).values(seq=12, hash=row(conn, 12)["hash"]))
    brk = _broken(actx.db, sink_dir, "rolled_back")
    assert brk.seq == 13 and "13..20" in brk.message and str(sink_dir) in brk.message


def test_newest_checkpoint_dropped_and_chain_truncated_to_the_one_before(
        actx: AppContext, sink_dir: Path) -> None:
    first, second = _two_published(actx)
    with attacker(actx.db) as conn:
        conn.execute(sa.delete(CHECKPOINTS).where(CHECKPOINTS.c.id == second.id))
        conn.execute(sa.delete(EVENTS).where(EVENTS.c.seq > 10))
        conn.execute(sa.update(HEAD).values(seq=10, hash=first.head_hash))
    brk = _broken(actx.db, sink_dir, "rolled_back")
    assert second.id in brk.message and "11..20" in brk.message


def _rewrite_everything(conn: sa.Connection, last: int) -> None:
    """Edit event 3 and recompute every hash after it, and the head: a consistent chain."""
    prev = row(conn, 2)["hash"]
    for seq in range(3, last + 1):
        fields = row(conn, seq)
        if seq == 3:
            fields["details"] = canonical_json({"covered": "up"})
        fields["prev_hash"] = prev
        fields["hash"] = rehash(fields)
        conn.execute(sa.update(EVENTS).where(EVENTS.c.seq == seq).values(
            details=fields["details"], prev_hash=prev, hash=fields["hash"]))
        prev = fields["hash"]
    conn.execute(sa.update(HEAD).values(seq=last, hash=prev))


def test_consistent_rewrite_after_dropping_every_checkpoint(actx: AppContext,
                                                            sink_dir: Path) -> None:
    first, _ = _two_published(actx)
    with attacker(actx.db) as conn:
        conn.execute(sa.delete(CHECKPOINTS))
        _rewrite_everything(conn, 20)
    brk = _broken(actx.db, sink_dir, "checkpoint_mismatch")
    assert brk.seq == 10 and first.id in brk.message and "rewritten" in brk.message


def test_rewrite_resigned_with_the_attackers_key_is_still_caught(actx: AppContext,
                                                                  sink_dir: Path) -> None:
    """The attacker signs fresh checkpoints with a key it controls, in the database and as an
    extra file in the sink (it can add files, not replace them): the trusted key decides."""
    _two_published(actx)
    rogue = audit.SigningKey.from_b64(audit.generate_key_b64())
    with attacker(actx.db) as conn:
        conn.execute(sa.delete(CHECKPOINTS))
        _rewrite_everything(conn, 20)
    with actx.db.transaction() as s:
        fake = audit.create_checkpoint(s, rogue)
    assert fake is not None
    audit.publish(audit.open_sink(f"dir:{sink_dir}"), fake)
    # Trusting only the configured key: the database's checkpoint is forged ...
    assert verify(actx.db).first_break.kind == "checkpoint_forged"  # type: ignore[union-attr]
    # ... and, even trusting the attacker's key for the database, the sink still holds the
    # trusted originals, and names the rogue file.
    both = {KEY.key_id: KEY.public_key, rogue.key_id: rogue.public_key}
    pub = published(sink_dir)
    assert [p for p in pub.problems if fake.id in p and "unknown key" in p]
    result = audit.verify_chain(actx.db, both, published=pub)
    assert result.first_break is not None
    assert (result.first_break.kind, result.first_break.seq) == ("checkpoint_mismatch", 10)


def test_truncate_everything(actx: AppContext, sink_dir: Path) -> None:
    _two_published(actx)
    with attacker(actx.db) as conn:
        if actx.db.dialect == "postgresql":
            conn.execute(sa.text("TRUNCATE audit_events, audit_checkpoints, audit_chain_head"))
        else:
            for t in (CHECKPOINTS, EVENTS, HEAD):
                conn.execute(sa.delete(t))
    result = verify(actx.db)
    assert result.ok and result.last_hash == GENESIS_HASH
    brk = _broken(actx.db, sink_dir, "rolled_back")
    assert "chain ends at 0" in brk.message


def test_a_published_checkpoint_dropped_or_edited_in_the_database(actx: AppContext,
                                                                  sink_dir: Path) -> None:
    _, second = _two_published(actx)
    with attacker(actx.db) as conn:
        conn.execute(sa.update(CHECKPOINTS).where(CHECKPOINTS.c.id == second.id)
                     .values(signed_at=second.signed_at.replace(year=2020)))
    assert verify(actx.db).first_break.kind == "checkpoint_forged"  # type: ignore[union-attr]
    with attacker(actx.db) as conn:
        conn.execute(sa.delete(CHECKPOINTS).where(CHECKPOINTS.c.id == second.id))
    brk = _broken(actx.db, sink_dir, "checkpoint_missing")
    assert second.id in brk.message


def test_a_checkpoint_dropped_from_the_middle_shows_without_the_sink(
        actx: AppContext) -> None:
    _two_published(actx)
    seed(actx.db, 2)
    actx.audit_checkpoint()
    with attacker(actx.db) as conn:
        conn.execute(sa.delete(CHECKPOINTS).where(CHECKPOINTS.c.ordinal == 2))
    brk = verify(actx.db).first_break
    assert brk is not None and brk.kind == "checkpoint_missing" and "2..2" in brk.message


def test_changes_after_the_last_publication_remain_undetectable(actx: AppContext,
                                                                sink_dir: Path) -> None:
    """The documented limit: what happened after the last published checkpoint."""
    _two_published(actx)
    seed(actx.db, 5)
    with attacker(actx.db) as conn:
        conn.execute(sa.delete(EVENTS).where(EVENTS.c.seq > 20))
        conn.execute(sa.update(HEAD).values(seq=20, hash=row(conn, 20)["hash"]))
    assert verify_against(actx.db, sink_dir).ok


def test_a_forged_or_unreadable_file_in_the_sink_is_named(actx: AppContext,
                                                          sink_dir: Path) -> None:
    _two_published(actx)
    (sink_dir / "000000000009-junk.json").write_text("{not json")
    result = verify_against(actx.db, sink_dir)
    assert result.first_break is not None and result.first_break.kind == "anchor_invalid"
    assert "000000000009-junk.json" in result.first_break.message


def test_a_checkpoint_unpublished_by_a_crash_is_published_next_time(actx: AppContext,
                                                                    sink_dir: Path) -> None:
    seed(actx.db, 3)
    with actx.db.transaction() as s:  # signed, then the process died before publishing
        lost = audit.create_checkpoint(s, KEY, contributors=actx.checkpoint_contributors())
    assert lost is not None and not sink_dir.exists()
    seed(actx.db, 1)
    newer = actx.audit_checkpoint()
    assert newer is not None
    assert [c.id for c in published(sink_dir).checkpoints] == [lost.id, newer.id]


def test_the_signer_refuses_to_vouch_for_a_rolled_back_database(actx: AppContext,
                                                                sink_dir: Path) -> None:
    """After a rollback that also dropped the database's checkpoints, the next scheduled
    checkpoint would sign (and publish) the attacker's history with the trusted key: it must
    extend the newest published checkpoint instead, and refuse."""
    seed(actx.db, 12)
    published_cp = actx.audit_checkpoint()
    assert published_cp is not None
    with attacker(actx.db) as conn:
        conn.execute(sa.delete(CHECKPOINTS))
        conn.execute(sa.delete(EVENTS).where(EVENTS.c.seq > 8))
        conn.execute(sa.update(HEAD).values(seq=8, hash=row(conn, 8)["hash"]))
    seed(actx.db, 6)  # the service appends on: the chain is longer again, a different one
    with pytest.raises(audit.AuditChainBroken, match=published_cp.id):
        actx.audit_checkpoint()
    assert [c.id for c in published(sink_dir).checkpoints] == [published_cp.id]


def test_a_file_removed_from_the_sink_or_a_fork_is_named(actx: AppContext,
                                                         sink_dir: Path) -> None:
    _two_published(actx)
    seed(actx.db, 1)
    actx.audit_checkpoint()
    middle = sorted(sink_dir.iterdir())[1]
    middle.chmod(0o644)
    middle.unlink()
    pub = published(sink_dir)
    assert len(pub.checkpoints) == 2
    assert [p for p in pub.problems if "2..2 are missing from the sink" in p]
    brk = verify_against(actx.db, sink_dir).first_break
    assert brk is not None and brk.kind == "anchor_invalid"


def test_concurrent_checkpointers_publish_every_checkpoint(actx: AppContext,
                                                           sink_dir: Path) -> None:
    """Two checkpointers and a writer at once: each checkpoint is published, numbers have no
    gap, and everything verifies (on PostgreSQL the writers really interleave)."""
    import threading

    seed(actx.db, 1)
    errors: list[BaseException] = []

    def checkpoints() -> None:
        try:
            for _ in range(4):
                actx.audit_checkpoint(only_if_advanced=False)
        except BaseException as exc:  # reported below
            errors.append(exc)

    workers = [threading.Thread(target=checkpoints) for _ in range(2)]
    for w in workers:
        w.start()
    seed(actx.db, 6, per_txn=2)
    for w in workers:
        w.join(timeout=60)
    assert not errors, errors
    pub = published(sink_dir)
    assert not pub.problems, pub.problems
    assert [c.ordinal for c in pub.checkpoints] == list(range(1, 9))
    result = verify_against(actx.db, sink_dir)
    assert result.ok and result.published_checked == 8, result.first_break


def test_the_profile_chooses_the_sink_resolved_to_an_absolute_path(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from aicloud.shared.config import load_settings

    monkeypatch.delenv("AICLOUD_AUDIT_ANCHOR_SINK", raising=False)
    repo = Path(__file__).resolve().parents[3]
    monkeypatch.setenv("AICLOUD_PROFILE_DIR", str(repo / "deploy" / "profiles"))
    monkeypatch.chdir(tmp_path)
    assert load_settings("dev").audit_anchor_sink == f"dir:{tmp_path / 'var' / 'anchors'}"
    assert load_settings("prod").audit_anchor_sink == "dir:/var/lib/aicloud/anchors"
    assert load_settings("dev", audit_anchor_sink="").audit_anchor_sink is None
    with pytest.raises(ValueError, match="dir:PATH"):
        load_settings("dev", audit_anchor_sink="s3://bucket")
    unset = load_settings("prod", audit_anchor_sink=None).safety_problems()
    assert [p for p in unset if "audit_anchor_sink" in p]
    assert not [p for p in load_settings("prod").safety_problems() if "anchor" in p]
