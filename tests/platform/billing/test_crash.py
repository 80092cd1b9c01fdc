"""Kill a rating worker with SIGKILL at random moments while usage flows in."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from collections import defaultdict

import sqlalchemy as sa

from aicloud.platform import billing
from aicloud.shared.db import Database
from tests.platform.billing.factories import (
    ORG_A,
    assert_ledger_clean,
    rate_all,
    setup_catalog,
    usage,
)

KILLS = 30


def test_sigkilled_rater_never_loses_or_doubles_a_charge(db: Database) -> None:
    setup_catalog(db)
    rng = random.Random(5)
    sent: dict[str, int] = defaultdict(int)  # resource -> total requests
    n = 0
    rated_by_workers: list[int] = []
    server = subprocess.Popen([sys.executable, "-m", "tests.platform.billing.rate_worker",
                               db.url], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert server.stdin is not None and server.stdout is not None
    for round_ in range(KILLS):
        batch = []
        for _ in range(150):
            resource = f"ep_{rng.randrange(12)}"
            q = rng.randrange(1, 50)
            sent[resource] += q
            batch.append(usage(f"r{n}", resource=resource, meter="endpoint_requests",
                               quantity=q))
            n += 1
        with db.transaction() as s:
            billing.ingest_usage(s, batch, actor=billing_actor(), rate=False)
        server.stdin.write(f"go {rng.choice([5, 10, 20])}\n")
        server.stdin.flush()
        word, pid = server.stdout.readline().split()
        assert word == "ready"
        time.sleep(rng.uniform(0.0, 0.05))
        os.kill(int(pid), signal.SIGKILL)
        word, _, status = server.stdout.readline().split()
        assert (word, os.waitstatus_to_exitcode(int(status))) == ("exit", -signal.SIGKILL), (
            f"round {round_}: the worker died on its own")
        with db.engine.connect() as c:
            rated_by_workers.append(c.scalar(sa.text(
                "SELECT count(*) FROM billing_usage_records WHERE state = 1")))
    server.stdin.close()
    server.wait(10)
    # Every worker committed work before its kill, and the killed workers left some undone.
    assert all(b > a for a, b in zip([0, *rated_by_workers], rated_by_workers, strict=False))
    assert rated_by_workers[-1] < n
    rate_all(db)  # a surviving rater finishes what the killed ones left

    assert_ledger_clean(db)
    with db.engine.connect() as c:
        assert c.scalar(sa.text("SELECT count(*) FROM billing_usage_records")) == n
        assert c.scalar(sa.text(
            "SELECT count(*) FROM billing_usage_records WHERE state <> 1")) == 0
        per_resource = dict(c.execute(sa.text(
            "SELECT resource_id, sum(charge) FROM billing_usage_records GROUP BY resource_id"
        )).all())
        charged_records = c.scalar(sa.text(
            "SELECT count(*) FROM billing_usage_records WHERE charge > 0"))
        usage_transfers = c.scalar(sa.text(
            "SELECT count(*) FROM billing_transfers WHERE reason = 'usage'"))
    assert usage_transfers == charged_records
    # endpoint_requests cost 1 micro-unit per 3 requests: cumulative rounding per resource.
    assert per_resource == {r: (2 * q + 3) // 6 for r, q in sent.items()}
    with db.transaction() as s:
        wallet = billing.org_wallet(s, ORG_A, "USD").id
        assert billing.balance(s, wallet).posted == -sum(per_resource.values())


def billing_actor():  # type: ignore[no-untyped-def]
    from aicloud.platform.audit import Actor

    return Actor.system("crash-test")
