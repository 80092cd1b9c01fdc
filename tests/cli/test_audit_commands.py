"""``aicloud audit``: operator commands on the database, with the API down."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from typer.testing import CliRunner

from aicloud.cli.main import app
from aicloud.shared.db import Database
from tests.platform.audit.helpers import EVENTS, attacker, seed

AICLOUD = [sys.executable, "-m", "aicloud.cli"]


@pytest.fixture
def cli_db(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
           _sqlite_template: Path) -> Iterator[Database]:
    for k in list(os.environ):
        if k.startswith("AICLOUD_"):
            monkeypatch.delenv(k)
    monkeypatch.setenv("AICLOUD_DATABASE_URL", f"sqlite:///{tmp_path / 'cli.db'}")
    monkeypatch.setenv("AICLOUD_AUDIT_ANCHOR_SINK", f"dir:{tmp_path / 'anchors'}")
    monkeypatch.setenv("COLUMNS", "200")
    shutil.copy(_sqlite_template, tmp_path / "cli.db")
    db = Database(os.environ["AICLOUD_DATABASE_URL"])
    yield db
    db.dispose()


def invoke(*args: str) -> tuple[int, str]:
    """Exit code and output; standard output alone when JSON was asked for."""
    result = CliRunner().invoke(app, ["audit", *args])
    return result.exit_code, result.stdout if "json" in args else result.output


def test_verify_exit_codes_as_a_real_process(cli_db: Database) -> None:
    ids = seed(cli_db, 30, per_txn=10)
    ok = subprocess.run([*AICLOUD, "audit", "verify"], capture_output=True, text=True,
                        timeout=120, env=os.environ)
    assert ok.returncode == 0, ok.stderr
    assert "ok" in ok.stdout and "30 event(s)" in ok.stdout
    with attacker(cli_db) as conn:
        conn.execute(sa.update(EVENTS).where(EVENTS.c.seq == 17).values(action="covered.up"))
    broken = subprocess.run([*AICLOUD, "audit", "verify", "--output", "json"],
                            capture_output=True, text=True, timeout=120, env=os.environ)
    assert broken.returncode == 1
    report = json.loads(broken.stdout)
    assert report["ok"] is False and report["events_checked"] == 16
    assert report["first_break"]["seq"] == 17
    assert report["first_break"]["event_id"] == ids[16]
    assert report["first_break"]["kind"] == "edited"
    code, out = invoke("verify")
    assert code == 1 and "BROKEN" in out and "seq 17" in out and ids[16] in out


def test_verify_refuses_an_unmigrated_database(tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AICLOUD_DATABASE_URL", f"sqlite:///{tmp_path / 'empty.db'}")
    code, out = invoke("verify")
    assert code == 2 and "aicloud db upgrade" in out


def test_checkpoint_then_public_key_verifies_it(cli_db: Database) -> None:
    code, out = invoke("checkpoint")
    assert code == 1 and "empty" in out
    seed(cli_db, 3)
    code, out = invoke("checkpoint", "-o", "json")
    assert code == 0, out
    cp = json.loads(out)
    assert (cp["seq"], cp["event_count"]) == (3, 3)
    code, out = invoke("public-key", "-o", "json")
    key = json.loads(out)
    assert key["key_id"] == cp["key_id"] and key["derived_development_key"] is True

    # A third party checks the signature with nothing but the public key and the message.
    import base64

    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    from aicloud.platform.audit.chain import canonical_json

    body = {k: cp[k] for k in ("id", "seq", "head_hash", "event_count", "signed_at", "key_id",
                               "ordinal", "contributions")}
    message = ("aicloud.audit.checkpoint.v2\n" + canonical_json(body)).encode()
    Ed25519PublicKey.from_public_bytes(base64.b64decode(key["public_key"])).verify(
        base64.b64decode(cp["signature"]), message)
    code, out = invoke("verify", "-o", "json")
    assert code == 0 and json.loads(out)["checkpoints_checked"] == 1


def test_a_generated_key_signs_checkpoints(cli_db: Database,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    code, out = invoke("generate-key", "-o", "json")
    generated = json.loads(out)
    monkeypatch.setenv("AICLOUD_AUDIT_SIGNING_KEY", generated["audit_signing_key"])
    seed(cli_db, 1)
    code, out = invoke("checkpoint", "-o", "json")
    assert code == 0 and "development key" not in out
    assert json.loads(out)["key_id"] == generated["key_id"]


def test_export_writes_json_lines(cli_db: Database, tmp_path: Path) -> None:
    seed(cli_db, 4, scope="/org_a")
    seed(cli_db, 2, scope="/org_b")
    target = tmp_path / "audit.jsonl"
    code, out = invoke("export", "--output-file", str(target), "-o", "json")
    assert code == 0 and json.loads(out) == {"file": str(target), "events": 6}
    lines = target.read_text().splitlines()
    assert [json.loads(line)["seq"] for line in lines] == [1, 2, 3, 4, 5, 6]  # seed sealed
    code, out = invoke("export", "-f", str(target), "--scope", "/org_b",
                       "--since", "2000-01-01T00:00:00", "-o", "json")
    assert code == 0 and json.loads(out)["events"] == 2
    code, out = invoke("export", "-f", str(target), "--since", "yesterday")
    assert code == 2 and "ISO 8601" in out


def test_checkpoint_publishes_and_verify_against_catches_a_rollback(
        cli_db: Database, tmp_path: Path) -> None:
    """As real processes: `audit checkpoint` publishes to the profile's sink; after the
    database owner rolls the chain and the ledger back, only `--against` says so."""
    from aicloud.platform import billing
    from tests.platform.audit.helpers import HEAD, row
    from tests.platform.billing.factories import ADMIN, ORG_A, ensure_scopes

    sink = tmp_path / "anchors"
    seed(cli_db, 6)
    with cli_db.transaction() as s:
        ensure_scopes(s, f"/{ORG_A}")  # wallets belong to an organization that exists
    for key in ("k1", "k2"):
        with cli_db.transaction() as s:
            billing.top_up(s, actor=ADMIN, org_id=ORG_A, amount=1_000, currency="USD",
                           idempotency_key=key)
    made = subprocess.run([*AICLOUD, "audit", "checkpoint", "-o", "json"], capture_output=True,
                          text=True, timeout=120, env=os.environ)
    assert made.returncode == 0, made.stderr
    cp = json.loads(made.stdout)
    assert cp["published_to"] == f"dir:{sink}" and cp["contributions"]["ledger"]["transfers"] == 2
    assert [p.name for p in sink.iterdir()] == [f"{cp['ordinal']:012d}-{cp['id']}.json"]

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*AICLOUD, *args], capture_output=True, text=True, timeout=120,
                              env=os.environ)

    assert run("audit", "verify", "--against", str(sink)).returncode == 0
    ok = run("ledger", "check", "--against", f"dir:{sink}")
    assert ok.returncode == 0 and "1 published digest(s)" in ok.stdout, ok.stdout

    with attacker(cli_db, ("audit_events", "audit_checkpoints", "billing_transfers")) as conn:
        conn.execute(sa.text("DELETE FROM audit_checkpoints"))
        conn.execute(sa.delete(EVENTS).where(EVENTS.c.seq > 4))
        conn.execute(sa.update(HEAD).values(seq=4, hash=row(conn, 4)["hash"]))
        last = conn.execute(sa.text("SELECT * FROM billing_transfers ORDER BY seq DESC")).first()
        conn.execute(sa.text("DELETE FROM billing_transfers WHERE seq = :s"), {"s": last.seq})
        for side, account in (("debits_posted", last.debit_account_id),
                              ("credits_posted", last.credit_account_id)):
            conn.execute(sa.text(f"UPDATE billing_accounts SET {side} = {side} - :a "
                                 "WHERE id = :id"), {"a": last.amount, "id": account})
    assert run("audit", "verify").returncode == 0  # the database alone cannot tell
    assert run("ledger", "check").returncode == 0
    broken = run("audit", "verify", "--against", f"dir:{sink}", "-o", "json")
    assert broken.returncode == 1
    brk = json.loads(broken.stdout)["first_break"]
    assert brk["kind"] == "rolled_back" and cp["id"] in brk["message"]
    table = run("audit", "verify", "--against", str(sink))
    assert table.returncode == 1 and "rolled_back" in table.stdout
    assert f"5..{cp['seq']}" in table.stdout
    ledger = run("ledger", "check", "--against", str(sink), "-o", "json")
    assert ledger.returncode == 1
    assert [d["code"] for d in json.loads(ledger.stdout)["discrepancies"]] == [
        "ledger-rolled-back"]
    missing = run("audit", "verify", "--against", str(tmp_path / "nowhere"))
    assert missing.returncode == 2 and "not a directory" in missing.stderr + missing.stdout
