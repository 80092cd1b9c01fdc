"""Usage names its scope by path; billing checks each distinct path against IAM, once per
batch, and refuses a path IAM does not have exactly (another tenant's project, a ghost)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta

import pytest
import sqlalchemy as sa

from aicloud.platform import billing
from aicloud.shared.db import Database
from aicloud.shared.errors import ValidationFailed
from tests.platform.billing.factories import (
    ADMIN,
    DEP_A,
    ORG_A,
    ORG_B,
    PRJ_A,
    PRJ_B,
    PRJ_C,
    T0,
    setup_catalog,
    usage,
)


@contextmanager
def _iam_reads(db: Database) -> Iterator[list[str]]:
    """The statements that read IAM's hierarchy tables while the block runs."""
    seen: list[str] = []

    def before(conn, cursor, statement, *args) -> None:  # type: ignore[no-untyped-def]
        if any(f"FROM {t}" in statement for t in ("organizations", "departments", "projects")):
            seen.append(statement)

    sa.event.listen(db.engine, "before_cursor_execute", before)
    try:
        yield seen
    finally:
        sa.event.remove(db.engine, "before_cursor_execute", before)


def test_a_10000_record_batch_looks_each_distinct_path_up_once(db: Database) -> None:
    """Each distinct path is checked once, and the projects a batch's paths end in are read
    in one query (a look-up per path cost a tenth of ingesting a 1,000-record batch)."""
    setup_catalog(db)
    projects = (PRJ_A, PRJ_B, PRJ_C)
    records = [usage(f"k{i}", project=projects[i % 3], resource=f"inst_{i % 40}")
               for i in range(10_000)]
    with db.transaction() as s:
        # The wallet exists, as after an organization's first charge (ingestion rates what it
        # stores, and making a wallet checks its organization once more).
        billing.org_wallet(s, ORG_A, "USD")
    with _iam_reads(db) as reads, db.transaction() as s:
        assert billing.ingest_usage(s, records, actor=ADMIN).accepted == 10_000
    assert len(reads) == 1, reads


@pytest.mark.parametrize("path, project", [
    (f"/{ORG_B}/{DEP_A}/{PRJ_A}", PRJ_A),  # org A's project under org B
    (f"/{ORG_A}/{PRJ_A}", PRJ_A),  # its department left out
    (f"/{ORG_A}/{DEP_A}/{PRJ_A}/{PRJ_B}", PRJ_B),  # too deep
    ("/org_0000000000000000000000009Z/prj_0000000000000000000000009Z",
     "prj_0000000000000000000000009Z"),  # a ghost organization and project
    ("/org_ghost/prj_x", "prj_x"),
])
def test_paths_iam_does_not_have_are_refused_and_nothing_is_written(
        db: Database, path: str, project: str) -> None:
    setup_catalog(db)
    good = usage("good")
    bad = usage("bad").model_copy(update={"scope_path": path, "project_id": project})
    with db.transaction() as s, pytest.raises(ValidationFailed, match="scope_path"):
        billing.ingest_usage(s, [good, bad], actor=ADMIN)
    with db.engine.connect() as c:
        assert c.scalar(sa.text("SELECT count(*) FROM billing_usage_records")) == 0


def test_wallets_budgets_contracts_and_reports_need_existing_scopes(db: Database) -> None:
    ghost = "org_0000000000000000000000009Z"
    calls = [
        lambda s: billing.top_up(s, actor=ADMIN, org_id=ghost, amount=5, currency="USD",
                                 idempotency_key="t"),
        lambda s: billing.adjust(s, actor=ADMIN, org_id=ghost, amount=5, currency="USD",
                                 idempotency_key="a", note="n"),
        lambda s: billing.set_credit_limit(s, actor=ADMIN, org_id=ghost, currency="USD",
                                           credit_limit=5),
        lambda s: billing.create_org_hold(s, actor=ADMIN, org_id=ghost, amount=5,
                                          currency="USD", idempotency_key="h"),
        lambda s: billing.org_wallet(s, ghost, "USD"),
        lambda s: billing.create_price_list(s, actor=ADMIN, spec=billing.PriceListCreate(
            org_id=ghost, currency="USD", effective_from=T0)),
        lambda s: billing.create_budget(s, actor=ADMIN, spec=billing.BudgetCreate(
            scope_path=f"/{ORG_B}/{DEP_A}", amount=5, currency="USD")),
        lambda s: billing.cost_report(s, scope_path=f"/{ORG_B}/{PRJ_A}", start=T0,
                                      end=T0 + timedelta(days=1), group_by=["project"]),
    ]
    for call in calls:
        with db.transaction() as s, pytest.raises(ValidationFailed):
            call(s)
    with db.engine.connect() as c:
        assert c.scalar(sa.text("SELECT count(*) FROM billing_accounts WHERE "
                                "owner_type = 'organization'")) == 0
        assert c.scalar(sa.text("SELECT count(*) FROM billing_budgets")) == 0


def test_at_or_below_matches_the_scope_and_its_children_only(db: Database) -> None:
    # Reports, budgets and alerts select "at or below a scope" with this; a bare LIKE
    # '/org_a%' also took /org_ab and, "_" being a wildcard, /orgXa.
    from aicloud.platform.billing.scopes import at_or_below

    paths = ["/org_a", "/org_a/prj_1", "/org_a/dep_1/prj_2", "/org_ab", "/org_ab/prj_1",
             "/orgXa/prj_1", "/org_a_x", "/org%a/p"]
    v = sa.union_all(*(sa.select(sa.literal(p, sa.String).label("p")) for p in paths)).subquery()
    with db.transaction() as s:
        got = set(s.scalars(sa.select(v.c.p).where(at_or_below(v.c.p, "/org_a"))))
        assert got == {"/org_a", "/org_a/prj_1", "/org_a/dep_1/prj_2"}
        assert set(s.scalars(sa.select(v.c.p).where(at_or_below(v.c.p, "/org%a")))) == {
            "/org%a/p"}


def test_usage_cannot_end_in_the_future(db: Database) -> None:
    """A window from next month would be charged now and count for no budget of this month
    (a budget dodge); a few minutes of clock skew are allowed."""
    setup_catalog(db)
    now = T0 + timedelta(days=40)
    skewed = usage("skew", quantity=60, start=now - timedelta(seconds=59) + timedelta(
        minutes=4))
    future = usage("next-month", quantity=60, start=now + timedelta(days=31))
    with db.transaction() as s, pytest.raises(ValidationFailed, match="future"):
        billing.ingest_usage(s, [usage("past", quantity=60), future], actor=ADMIN, now=now)
    with db.transaction() as s:
        assert billing.ingest_usage(s, [usage("past", quantity=60), skewed], actor=ADMIN,
                                    now=now).accepted == 2
