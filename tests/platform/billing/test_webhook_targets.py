"""Budget webhooks go to public addresses only (SSRF): checked when the budget is created and
again at delivery, after resolving the host, connecting to the checked address; operators
allow exceptions with ``webhook_allowed_targets``. Deliveries go over real HTTP."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

import pytest
import sqlalchemy as sa

from aicloud.platform import billing
from aicloud.shared.clock import FakeClock
from aicloud.shared.db import Database
from aicloud.shared.errors import ValidationFailed
from tests.platform.billing.factories import (
    ADMIN,
    DEP_A,
    ORG_A,
    PRJ_A,
    T0,
    rate_all,
    setup_catalog,
    usage,
)
from tests.platform.billing.receiver import Receiver

NOW = T0 + timedelta(days=10)
PUBLIC = "93.184.216.34"  # a global address: no DNS needed to name it

INTERNAL_URLS = [
    "http://127.0.0.1:8080/internal-admin",
    "http://localhost/internal-admin",
    "http://[::1]/",
    "http://[::ffff:127.0.0.1]/",  # IPv4-mapped IPv6
    "http://[::ffff:7f00:1]/",
    "http://[64:ff9b::a9fe:a9fe]/",  # NAT64 of 169.254.169.254
    "http://[2002:7f00:1::]/",  # 6to4 of 127.0.0.1
    "http://2130706433/",  # 127.0.0.1 as a decimal number
    "http://0177.0.0.1/",  # octal
    "http://0x7f.0.0.1/",  # hex
    "http://127.1/",  # short form
    "http://10.1.2.3/",
    "http://172.16.0.1/",
    "http://192.168.1.1/",
    "http://100.64.0.1/",  # shared address space (CGNAT)
    "http://169.254.169.254/latest/meta-data/",  # cloud metadata
    "http://100.100.100.200/",  # Alibaba metadata
    "http://[fd00:ec2::254]/",  # AWS metadata over IPv6
    "http://[fe80::1]/",  # link-local
    "http://[fc00::1]/",  # unique local
    "http://224.0.0.1/",  # multicast
    "http://[ff02::1]/",
    "http://0.0.0.0/",  # unspecified
    "http://[::]/",
    "http://240.0.0.1/",  # reserved
    "http://user:pass@" + PUBLIC + "/",  # credentials in the URL
    "ftp://" + PUBLIC + "/",
]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


def _create(db: Database, url: str, policy: billing.WebhookPolicy | None = None,
            **kw: object) -> billing.Budget:
    with db.transaction() as s:
        return billing.create_budget(s, actor=ADMIN, spec=billing.BudgetCreate(
            scope_path=f"/{ORG_A}", amount=1_000_000, currency="USD", thresholds=[50],
            webhook_url=url, **kw), webhooks=policy)


def _cross_threshold(db: Database) -> None:
    setup_catalog(db)
    with db.transaction() as s:
        billing.ingest_usage(s, [usage("u1", quantity=600, start=NOW - timedelta(days=1))],
                             actor=ADMIN)
    rate_all(db)
    with db.transaction() as s:
        billing.evaluate_budgets(s, now=NOW)


def _deliveries(db: Database) -> list[tuple[str, str | None]]:
    with db.engine.connect() as c:
        return [tuple(r) for r in c.execute(sa.text(  # type: ignore[misc]
            "SELECT status, last_error FROM billing_webhook_deliveries"))]


@pytest.mark.parametrize("url", INTERNAL_URLS)
def test_internal_targets_are_refused_when_the_budget_is_created(sqlite_db: Database,
                                                                  url: str) -> None:
    with pytest.raises(ValidationFailed) as refused:  # 422; the address ones say why
        _create(sqlite_db, url)
    assert refused.value.status == 422
    with sqlite_db.engine.connect() as c:
        assert c.scalar(sa.text("SELECT count(*) FROM billing_budgets")) == 0


def test_public_targets_are_accepted_and_strict_profiles_require_https(
        sqlite_db: Database) -> None:
    assert _create(sqlite_db, f"http://{PUBLIC}/hook").webhook_url == f"http://{PUBLIC}/hook"
    strict = billing.WebhookPolicy(require_https=True)
    with pytest.raises(ValidationFailed, match="https"):
        _create(sqlite_db, f"http://{PUBLIC}/hook", strict)
    assert _create(sqlite_db, f"https://{PUBLIC}/hook", strict).webhook_url.startswith("https")


def test_an_allow_listed_internal_receiver_gets_the_delivery_over_http(
        db: Database, receiver: Receiver) -> None:
    for entry in ("127.0.0.0/8", "localhost"):  # a CIDR, or a host name
        policy = billing.WebhookPolicy(allow=(entry,))
        url = receiver.url if entry != "localhost" else f"http://localhost:{receiver.port}/h"
        billing.check_target(url, policy)
    policy = billing.WebhookPolicy(allow=("127.0.0.0/8",))
    _create(db, receiver.url + "/internal-admin", policy)
    _cross_threshold(db)
    assert billing.deliver_due(db, default_secret="s" * 32, clock=FakeClock(NOW),
                               policy=policy) == 1
    [(body, headers)] = receiver.received
    assert billing.verify("s" * 32, body, headers[billing.SIGNATURE_HEADER])
    assert _deliveries(db) == [("delivered", None)]


def test_delivery_checks_again_and_refuses_without_the_exception(
        db: Database, receiver: Receiver) -> None:
    # Created while an operator allowed 127.0.0.1; the exception is gone at delivery.
    _create(db, receiver.url, billing.WebhookPolicy(allow=("127.0.0.1",)))
    _cross_threshold(db)
    assert billing.deliver_due(db, default_secret="s" * 32, clock=FakeClock(NOW)) == 0
    assert receiver.received == []
    [(status, error)] = _deliveries(db)
    assert status == "failed" and error is not None and error.startswith("refused:")
    assert "127.0.0.1 is a loopback address" in error


def test_delivery_connects_to_the_checked_address_so_rebinding_cannot_switch_it(
        db: Database, receiver: Receiver) -> None:
    """A name that resolved to a public address when the budget was made and to 127.0.0.1
    at delivery (DNS rebinding) is refused; a name allowed by the operator is reached at the
    address that was checked, with the name in the Host header (no second resolution: the
    name exists only in this resolver)."""
    answers = iter([PUBLIC, "127.0.0.1"])
    rebinding = billing.WebhookPolicy(resolver=lambda host, port: [next(answers)])
    _create(db, f"http://hooks.rebind.test:{receiver.port}/hook", rebinding)
    _cross_threshold(db)
    assert billing.deliver_due(db, default_secret="s" * 32, clock=FakeClock(NOW),
                               policy=rebinding) == 0
    assert receiver.received == []
    [(status, error)] = _deliveries(db)
    assert status == "failed" and "loopback" in (error or "")

    named = billing.WebhookPolicy(allow=("hooks.internal.test",),
                                  resolver=lambda host, port: ["127.0.0.1"])
    _create(db, f"http://hooks.internal.test:{receiver.port}/hook", named)
    with db.transaction() as s:  # a second threshold crossing for the new budget
        billing.evaluate_budgets(s, now=NOW)
    assert billing.deliver_due(db, default_secret="s" * 32, clock=FakeClock(NOW),
                               policy=named) == 1
    [(_, headers)] = receiver.received
    assert headers["Host"] == f"hooks.internal.test:{receiver.port}"


def test_redirects_are_not_followed(db: Database) -> None:
    target = Receiver()
    redirecting = Receiver(redirect_to=target.url + "/internal-admin")
    try:
        policy = billing.WebhookPolicy(allow=("127.0.0.1/32",))
        _create(db, redirecting.url, policy)
        _cross_threshold(db)
        assert billing.deliver_due(db, default_secret="s" * 32, clock=FakeClock(NOW),
                                   policy=policy) == 0
        assert len(redirecting.received) == 1 and target.received == []
        [(status, error)] = _deliveries(db)
        assert status == "pending" and error == "HTTP 307"
    finally:
        target.close()
        redirecting.close()


def test_mapped_metadata_address_is_refused_at_any_scope(sqlite_db: Database) -> None:
    with sqlite_db.transaction() as s, pytest.raises(billing.WebhookTargetRefused):
        billing.create_budget(s, actor=ADMIN, spec=billing.BudgetCreate(
            scope_path=f"/{ORG_A}/{DEP_A}/{PRJ_A}", amount=5, currency="USD",
            webhook_url="http://[::ffff:169.254.169.254]/"))


def test_a_host_that_does_not_resolve_yet_is_checked_at_each_delivery(db: Database) -> None:
    # .invalid never resolves (RFC 6761): accepted at creation, retried at delivery.
    _create(db, "http://hooks.invalid/hook")
    _cross_threshold(db)
    assert billing.deliver_due(db, default_secret="s" * 32, clock=FakeClock(NOW)) == 0
    [(status, error)] = _deliveries(db)
    assert status == "pending" and "does not resolve" in (error or "")


def test_the_deployment_policy_comes_from_its_config(sqlite_db: Database) -> None:
    from aicloud.runtime import build_context
    from tests.conftest import make_settings

    dev = build_context(make_settings(sqlite_db), sqlite_db).webhook_policy
    assert not dev.require_https and dev.allow == ()
    strict = build_context(make_settings(sqlite_db, strict=True,
                                         webhook_allowed_targets=["10.0.0.0/8"]),
                           sqlite_db).webhook_policy
    assert strict.require_https
    assert billing.check_target("https://10.1.2.3/h", strict).ip == "10.1.2.3"  # type: ignore[union-attr]
    with pytest.raises(ValidationFailed, match="https"):
        billing.check_target("http://10.1.2.3/h", strict)
    with pytest.raises(billing.WebhookTargetRefused):
        billing.check_target("https://192.168.0.1/h", strict)
    with pytest.raises(ValueError, match="webhook_allowed_targets"):
        make_settings(sqlite_db, webhook_allowed_targets=["10.0.0.0/33"])
