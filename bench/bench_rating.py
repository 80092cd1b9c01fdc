"""Usage ingestion + rating, end to end, against a raw INSERT of the same usage rows.

Two paths are measured, each against a raw INSERT of the same rows in the same run:

- **over HTTP** (the target): a real ``aicloud api`` server process on a socket, the usage
  POSTed as ``/usage`` bodies of 1,000 records (JSON built before the clock starts, as a
  reporter sends it ready-made; parsing, validation, authorization and the transaction are
  timed), then ``rate_until_idle`` in this process until every record is rated and charged
  (ingestion rates what it stores, so the rater finds nothing left unless that failed).
  Records per second of wall clock, from the first POST to the last charge.
- **in process**: ``ingest_usage`` on batches of 5,000 and the same rating, no HTTP.

The baseline is the fastest plain INSERT of the same rows into a table with only a primary
key (bench/raw_insert.py tries every form each run); on PostgreSQL the HTTP path is also
shown against a binary COPY of those rows, the fastest way in at all.

``AICLOUD_BENCH_USAGE_RECORDS`` sets the records per run (default 20,000).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import httpx
import sqlalchemy as sa

from aicloud.platform import billing, iam
from aicloud.platform.audit import Actor
from aicloud.shared.db import Database
from bench import raw_insert
from bench.dbs import each_database
from bench.harness import Measurement

RECORDS = int(os.environ.get("AICLOUD_BENCH_USAGE_RECORDS", "20000"))
BATCH = 5_000
HTTP_BATCH = 1_000
REPEAT = 3
T0 = datetime(2026, 1, 1, tzinfo=UTC)
AGENT = Actor.system("bench")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class ApiServer:
    """``aicloud api`` in its own process on a free port of 127.0.0.1."""

    def __init__(self, db: Database):
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {k: v for k, v in os.environ.items() if not k.startswith("AICLOUD_")}
        env.update(AICLOUD_DATABASE_URL=db.url, AICLOUD_BOOTSTRAP_ADMIN_ENABLED="false",
                   AICLOUD_LOG_LEVEL="WARNING", PYTHONUNBUFFERED="1")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "aicloud.cli", "api", "--host", "127.0.0.1",
             "--port", str(self.port)], env=env, stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE)

    def __enter__(self) -> ApiServer:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"aicloud api exited: {self.proc.stderr.read()!r}")  # type: ignore[union-attr]
            try:
                if httpx.get(self.url + "/healthz", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise RuntimeError("aicloud api did not start")

    def __exit__(self, *exc: object) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def _api_key(db: Database) -> str:
    """A key of a platform administrator (who holds billing.usage.write at the platform)."""
    with db.transaction() as s:
        admin = iam.bootstrap_admin(s, email="bench@example.org",
                                    password="correct horse battery staple")
        return iam.create_api_key(s, admin.user.id, iam.ApiKeyCreate(name="bench"),
                                  actor=AGENT, grantor=None).secret


def _bodies(records: list[billing.UsageIn]) -> list[bytes]:
    """The POST /usage bodies a reporter sends, 1,000 records each."""
    return [json.dumps({"records": [r.model_dump(mode="json") for r in
                                    records[i:i + HTTP_BATCH]]}).encode()
            for i in range(0, len(records), HTTP_BATCH)]


def _over_http(db: Database, server: ApiServer, key: str, run: int,
               projects: list[str]) -> float:
    """Records per wall-clock second: POST every batch, then rate until idle."""
    bodies = _bodies(_records(f"http{run}", projects))
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    with httpx.Client(base_url=server.url, headers=headers, timeout=120) as client:
        client.get("/meters").raise_for_status()  # connection and key cache warm
        t0 = time.perf_counter()
        for body in bodies:
            resp = client.post("/usage", content=body)
            if resp.status_code != 200:
                raise RuntimeError(f"POST /usage: {resp.status_code} {resp.text[:500]}")
        billing.rate_until_idle(db, batch_size=BATCH, max_batches=10**6)
        elapsed = time.perf_counter() - t0
    _check_all_charged(db, f"http{run}")
    return RECORDS / elapsed


def _records(tag: str, projects: list[str]) -> list[billing.UsageIn]:
    """Usage of 20 projects (in 10 departments of 5 organizations), as _setup made them."""
    return [billing.UsageIn(
        resource_id=f"inst_{i % 500}", project_id=projects[i % 20].rsplit("/", 1)[1],
        scope_path=projects[i % 20], principal_id=f"user_{i % 50}",
        meter="gpu_seconds", dimension_value="A100", quantity=60,
        window_start=T0 + timedelta(minutes=i), window_end=T0 + timedelta(minutes=i, seconds=60),
        idempotency_key=f"{tag}-{i}", source="bench") for i in range(RECORDS)]


def _setup(db: Database) -> list[str]:
    """Meters, a price list, and the scope paths of 20 projects (usage is checked against
    IAM, so they exist there)."""
    with db.transaction() as s:
        orgs = [iam.create_org(s, f"bench-{i}", actor=AGENT).id for i in range(5)]
        deps = [iam.create_department(s, orgs[j % 5], f"dep-{j}", actor=AGENT).id
                for j in range(10)]
        projects = [iam.scope_path(s, iam.create_project(
            s, name=f"prj-{k}", department_id=deps[k % 10], actor=AGENT).id)
            for k in range(20)]
        billing.register_default_meters(s)
        billing.create_price_list(s, actor=AGENT, spec=billing.PriceListCreate(
            currency="USD", effective_from=T0, prices=[billing.PriceIn(
                meter="gpu_seconds", unit_price=2_500_000, per_quantity=3600)]))
    return projects


def _end_to_end(db: Database, run: int, projects: list[str]) -> tuple[float, float]:
    """(records per wall-clock second, records per CPU second of this process)."""
    # built before the clock starts: callers send them ready-made
    records = _records(f"e2e{run}", projects)
    t0, c0 = time.perf_counter(), time.process_time()
    for i in range(0, RECORDS, BATCH):
        with db.transaction() as s:
            billing.ingest_usage(s, records[i:i + BATCH], actor=AGENT)
    billing.rate_until_idle(db, batch_size=BATCH, max_batches=10**6)
    elapsed, cpu = time.perf_counter() - t0, time.process_time() - c0
    _check_all_charged(db, f"e2e{run}")
    return RECORDS / elapsed, RECORDS / cpu


def _check_all_charged(db: Database, tag: str) -> None:
    """After the clock: every record of the run is rated (ingestion rates what it stores, the
    rater what is left) and charged by exactly one usage transfer."""
    with db.engine.connect() as c:
        rated, charges = c.execute(sa.text(
            "SELECT count(*) FILTER (WHERE u.state = 1), count(t.seq) "
            "FROM billing_usage_records u LEFT JOIN billing_transfers t ON t.usage_id = u.id "
            "WHERE u.idempotency_key LIKE :tag"), {"tag": f"{tag}-%"}).one()
    assert (rated, charges) == (RECORDS, RECORDS), (rated, charges)


_PLAIN_STRINGS = ("idempotency_key", "resource_id", "project_id", "scope_path", "principal_id",
                  "meter", "dimension_value", "source")


def _plain_table(db: Database) -> sa.Table:
    meta = sa.MetaData()
    plain = sa.Table("bench_plain_usage", meta, sa.Column("seq", sa.Integer, primary_key=True),
                     *(sa.Column(c, sa.String(255)) for c in _PLAIN_STRINGS),
                     sa.Column("quantity", sa.BigInteger),
                     sa.Column("window_start", sa.DateTime), sa.Column("window_end", sa.DateTime))
    meta.create_all(db.engine)
    return plain


def _raw_rows(projects: list[str]) -> Callable[[str], list[dict[str, object]]]:
    """The usage rows for the plain table, as a reporter would hand them over."""
    def make(tag: str) -> list[dict[str, object]]:
        return [{**{c: getattr(r, c) for c in _PLAIN_STRINGS}, "quantity": r.quantity,
                 "window_start": r.window_start.replace(tzinfo=None),
                 "window_end": r.window_end.replace(tzinfo=None)}
                for r in _records(tag, projects)]
    return make


def _raw(db: Database, plain: sa.Table, run: int,
         projects: list[str]) -> tuple[float, float]:
    """The fastest plain INSERT of the same rows (see bench/raw_insert.py)."""
    make = _raw_rows(projects)
    _, wall, cpu = raw_insert.best_insert(db, plain, lambda form: make(f"raw{run}{form}"), BATCH)
    return wall, cpu


def _raw_copy(db: Database, plain: sa.Table, run: int, projects: list[str]) -> float:
    return raw_insert.rate(db, plain, _raw_rows(projects)(f"copy{run}"), BATCH,
                           raw_insert.copy)[0]


def run() -> list[Measurement]:
    out = []
    with each_database() as dbs:
        for name, db in dbs:
            projects = _setup(db)
            plain = _plain_table(db)
            key = _api_key(db)
            # Best of interleaved runs: the machine is shared, noise hits both sides alike.
            raw = ours = (0.0, 0.0)
            http = copy = 0.0
            with ApiServer(db) as server:
                for run_no in range(REPEAT):
                    raw = tuple(map(max, raw, _raw(db, plain, run_no, projects)))  # type: ignore[assignment]
                    if name == "postgresql":
                        copy = max(copy, _raw_copy(db, plain, run_no, projects))
                    http = max(http, _over_http(db, server, key, run_no, projects))
                    ours = tuple(map(max, ours, _end_to_end(db, run_no, projects)))  # type: ignore[assignment]
            with db.transaction() as s:
                assert billing.check_ledger(s).ok
            out.append(Measurement(
                f"POST /usage (1,000/body) to an `aicloud api` process + rate + ledger, "
                f"{RECORDS} records ({name}, wall clock)", http, "records/s",
                f"raw INSERT of the same usage rows ({name})", raw[0],
                target=(">= 10,000 records/s on SQLite" if name == "sqlite"
                        else ">= 0.25x the raw INSERT on PostgreSQL")))
            if copy:
                # Not the target's baseline (COPY is not an INSERT), but the fastest way the
                # database takes these rows at all, and what our ingestion itself uses.
                out.append(Measurement(
                    f"POST /usage (1,000/body) to an `aicloud api` process + rate + ledger, "
                    f"{RECORDS} records ({name}, wall clock, against COPY)", http, "records/s",
                    f"raw binary COPY of the same usage rows ({name})", copy))
            out.append(Measurement(
                f"usage ingest + rate + ledger, {RECORDS} records ({name}, wall clock)",
                ours[0], "records/s", f"raw INSERT of the same usage rows ({name})", raw[0],
                target=">= 10,000 records/s on SQLite" if name == "sqlite" else None))
            if name == "sqlite":
                # SQLite runs inside this process, so its CPU time is the whole cost: this
                # row is what the machine does when other processes are not competing.
                out.append(Measurement(
                    f"usage ingest + rate + ledger, {RECORDS} records (sqlite, per CPU second)",
                    ours[1], "records/s", "raw INSERT of the same usage rows (per CPU second)",
                    raw[1], target=">= 10,000 records/s on SQLite"))
    return out
