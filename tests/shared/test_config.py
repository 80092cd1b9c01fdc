from __future__ import annotations

import base64
import secrets
from pathlib import Path

import pytest
from pydantic import ValidationError

from aicloud.shared.config import PROFILES, ConfigError, load_settings, mask_url_password
from tests.tls_certs import make_self_signed

PROD_ENV = {
    "AICLOUD_DATABASE_URL":
        "postgresql://aicloud:s3cret@db.internal:5432/aicloud?sslmode=verify-full",
    "AICLOUD_SECRET_KEY": secrets.token_urlsafe(32),
    "AICLOUD_AUDIT_SIGNING_KEY": base64.b64encode(secrets.token_bytes(32)).decode(),
    "AICLOUD_TRUSTED_PROXIES": "10.0.0.5, 10.0.1.0/24",
    "AICLOUD_METRICS_TOKEN": secrets.token_urlsafe(32),
}


def prod_problems(monkeypatch: pytest.MonkeyPatch, **env: str) -> list[str]:
    """The problems prod reports with the safe PROD_ENV changed by ``env``."""
    for k, v in {**PROD_ENV, **env}.items():
        monkeypatch.setenv(k, v)
    return load_settings("prod").safety_problems()


@pytest.mark.parametrize("profile", PROFILES)
def test_every_profile_loads_and_validates(profile: str, monkeypatch: pytest.MonkeyPatch) -> None:
    settings = load_settings(profile)
    if settings.strict:
        for k, v in PROD_ENV.items():
            monkeypatch.setenv(k, v)
        settings = load_settings(profile)
    assert settings.profile == profile
    settings.validate_for_start()  # raises if unsafe


@pytest.mark.parametrize("profile", ["staging", "prod"])
def test_strict_profiles_refuse_unsafe_config_listing_every_problem(
    profile: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AICLOUD_DATABASE_URL", "sqlite:///var/x.db")
    monkeypatch.setenv("AICLOUD_BOOTSTRAP_ADMIN_ENABLED", "true")
    monkeypatch.setenv("AICLOUD_COOKIE_SECURE", "false")
    settings = load_settings(profile)
    with pytest.raises(ConfigError) as info:
        settings.validate_for_start()
    text = str(info.value)
    # sqlite, secret, bootstrap admin, cookies, audit signing key, nothing providing TLS
    assert len(info.value.problems) == 3 + 1 + 1 + 1
    for needle in ("SQLite", "secret_key", "bootstrap_admin_enabled", "cookie_secure",
                   "audit_signing_key", "nothing provides TLS"):
        assert needle in text


def test_missing_database_url_is_reported_for_prod() -> None:
    settings = load_settings("prod")
    problems = settings.safety_problems()
    assert any("database_url is not set" in p for p in problems)
    assert any("secret_key" in p for p in problems)


def test_environment_overrides_profile(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AICLOUD_PORT", "9123")
    monkeypatch.setenv("AICLOUD_PROVIDERS__COMPUTE", "slurm")
    settings = load_settings("dev")
    assert settings.port == 9123
    assert settings.providers.compute == "slurm"
    assert len(settings.providers.inventory.static_gpus) == 8


def test_profile_selected_by_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AICLOUD_PROFILE", "demo")
    assert load_settings().profile == "demo"


def test_unknown_profile_is_a_clear_error() -> None:
    with pytest.raises(ConfigError, match="unknown profile 'qa'"):
        load_settings("qa")


def test_masked_config_hides_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    for k, v in PROD_ENV.items():
        monkeypatch.setenv(k, v)
    data = load_settings("prod").masked()
    assert data["secret_key"] == "********"
    assert data["audit_signing_key"] == "********"
    assert "s3cret" not in str(data)
    assert PROD_ENV["AICLOUD_AUDIT_SIGNING_KEY"] not in str(data)
    assert data["database_url"] == \
        "postgresql://aicloud:********@db.internal:5432/aicloud?sslmode=verify-full"


def test_mask_url_password_leaves_passwordless_urls() -> None:
    assert mask_url_password("sqlite:///var/a.db") == "sqlite:///var/a.db"
    assert mask_url_password("postgresql://u@h/db") == "postgresql://u@h/db"


@pytest.mark.parametrize(("value", "message"), [
    ("not base64!", "not valid base64"),
    (base64.b64encode(b"short").decode(), "expected 32 bytes"),
])
def test_a_malformed_audit_signing_key_is_a_clear_error(
    value: str, message: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AICLOUD_AUDIT_SIGNING_KEY", value)
    with pytest.raises(ValueError, match=message):
        load_settings("dev")


def test_an_empty_audit_signing_key_means_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AICLOUD_AUDIT_SIGNING_KEY", "")
    assert load_settings("dev").audit_signing_key is None


# --- secret strength --------------------------------------------------------------------------


@pytest.mark.parametrize(("secret", "why"), [
    ("a" * 32, "estimated entropy of 0 bits"),
    ("a" * 64, "estimated entropy of 0 bits"),
    ("changeme" * 4, "placeholder 'changeme'"),
    ("Change-Me-Please-This-Is-Production!", "placeholder 'changeme'"),
    ("insecure-dev-secret-change-me", "insecure default"),
    ("my-super-secret-password-for-prod-2026", "placeholder 'password'"),
    ("abcdefghijklmnopqrstuvwxyzABCDEFGHIJ", "estimated entropy"),
    ("9876543210" * 4, "estimated entropy"),
    ("Zx8#" * 10, "estimated entropy"),
    # Fixed draws of token_urlsafe(16) and token_hex(16): parameters must be the same in every
    # xdist worker. 128 bits written as 32 hex digits do not estimate as 128.
    ("lzO8Z_p6Lq0zvOwQsoLQ_w", "bytes long; at least 32"),
    ("2a1d2108dd2d6c270f58d824cab7ad65", "estimated entropy"),
])
def test_weak_secret_keys_are_refused_with_a_clear_message(
    secret: str, why: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    problems = [p for p in prod_problems(monkeypatch, AICLOUD_SECRET_KEY=secret)
                if p.startswith("secret_key")]
    assert len(problems) == 1, problems
    assert why in problems[0]
    assert "token_urlsafe(32)" in problems[0]  # says how to make a good one


@pytest.mark.parametrize("make", [
    lambda: secrets.token_urlsafe(32), lambda: secrets.token_urlsafe(64),
    lambda: secrets.token_hex(32), lambda: base64.b64encode(secrets.token_bytes(32)).decode(),
])
def test_random_secret_keys_are_accepted(make, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    for _ in range(20):  # the estimate must hold for every draw, not for a lucky one
        assert prod_problems(monkeypatch, AICLOUD_SECRET_KEY=make()) == []


def test_weak_keys_do_not_stop_dev() -> None:
    load_settings("dev", secret_key="a" * 32).validate_for_start()
    load_settings("dev").validate_for_start()  # the insecure default is fine on a laptop


# --- TLS and proxies ---------------------------------------------------------------------------


def test_strict_profile_needs_a_certificate_or_a_trusted_proxy(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    problems = prod_problems(monkeypatch, AICLOUD_TRUSTED_PROXIES="")
    assert len(problems) == 1 and "nothing provides TLS" in problems[0]
    cert, key = make_self_signed(tmp_path)
    assert prod_problems(monkeypatch, AICLOUD_TRUSTED_PROXIES="", AICLOUD_TLS_CERT_FILE=str(cert),
                         AICLOUD_TLS_KEY_FILE=str(key)) == []


def test_a_certificate_that_cannot_be_loaded_is_refused(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    cert, key = make_self_signed(tmp_path)
    other = tmp_path / "other"
    other.mkdir()
    _, other_key = make_self_signed(other)
    for cert_file, key_file in ((cert, other_key), (tmp_path / "missing.pem", key)):
        problems = prod_problems(monkeypatch, AICLOUD_TLS_CERT_FILE=str(cert_file),
                                 AICLOUD_TLS_KEY_FILE=str(key_file))
        assert len(problems) == 1 and "cannot be loaded" in problems[0], problems


def test_a_certificate_without_its_key_is_invalid_in_every_profile(tmp_path: Path) -> None:
    cert, _ = make_self_signed(tmp_path)
    with pytest.raises(ValidationError, match="set together"):
        load_settings("dev", tls_cert_file=str(cert))


@pytest.mark.parametrize("everyone", ["0.0.0.0/0", "::/0"])
def test_trusting_every_address_as_a_proxy_is_refused(
    everyone: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    problems = prod_problems(monkeypatch, AICLOUD_TRUSTED_PROXIES=f"10.0.0.5,{everyone}")
    assert problems == [f"trusted_proxies contains {everyone}, which trusts every address; "
                        "list only the TLS-terminating proxies"]


def test_trusted_proxies_parse_from_env_and_reject_garbage(
    monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AICLOUD_TRUSTED_PROXIES", '["10.0.0.5", "fd00::/64"]')
    assert load_settings("dev").trusted_proxies == ["10.0.0.5/32", "fd00::/64"]
    monkeypatch.setenv("AICLOUD_TRUSTED_PROXIES", "10.0.0.5, proxy.internal")
    with pytest.raises(ValidationError, match=r"'proxy\.internal' is not an IP address"):
        load_settings("dev")


def test_hsts_cannot_be_switched_off_in_strict_profiles(monkeypatch: pytest.MonkeyPatch) -> None:
    problems = prod_problems(monkeypatch, AICLOUD_HSTS_MAX_AGE_SECONDS="0")
    assert len(problems) == 1 and "hsts_max_age_seconds" in problems[0]


# --- metrics, docs, database TLS ------------------------------------------------------------------


def test_strict_profiles_restrict_metrics_and_docs_by_default() -> None:
    for profile in ("staging", "prod"):
        settings = load_settings(profile)
        assert not settings.metrics_public and not settings.docs_enabled
    for profile in ("kind", "dev", "demo"):
        settings = load_settings(profile)
        assert settings.metrics_public and settings.docs_enabled and not settings.tls_required


def test_public_metrics_or_a_weak_metrics_token_is_refused(
    monkeypatch: pytest.MonkeyPatch
) -> None:
    problems = prod_problems(monkeypatch, AICLOUD_METRICS_PUBLIC="true")
    assert len(problems) == 1 and "metrics_public is true" in problems[0]
    problems = prod_problems(monkeypatch, AICLOUD_METRICS_PUBLIC="false",
                             AICLOUD_METRICS_TOKEN="metrics")
    assert len(problems) == 1 and problems[0].startswith("metrics_token is 7 bytes long")


@pytest.mark.parametrize(("url", "ok"), [
    ("postgresql://u:p@db.internal/aicloud", False),
    ("postgresql+psycopg://u:p@10.1.2.3:5432/aicloud?sslmode=prefer", False),
    ("postgresql+psycopg://u:p@db.internal/aicloud?sslmode=require", True),
    ("postgresql://u:p@db.internal/aicloud?sslmode=verify-full", True),
    ("postgresql://u@127.0.0.1/aicloud", True),  # loopback: nothing on the network
    ("postgresql://u@localhost/aicloud", True),
    ("postgresql://u@/aicloud?host=/var/run/postgresql", True),  # a Unix socket
])
def test_a_remote_postgresql_url_must_require_tls(
    url: str, ok: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("PGSSLMODE", raising=False)
    problems = prod_problems(monkeypatch, AICLOUD_DATABASE_URL=url)
    if ok:
        assert problems == []
    else:
        assert len(problems) == 1 and "sslmode=verify-full" in problems[0]
        assert "p@" not in problems[0]  # the password is not repeated in the message


def test_pgsslmode_in_the_environment_counts(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PGSSLMODE", "verify-full")
    assert prod_problems(monkeypatch, AICLOUD_DATABASE_URL="postgresql://u:p@db.internal/a") == []


def test_the_metrics_token_is_masked(monkeypatch: pytest.MonkeyPatch) -> None:
    for k, v in PROD_ENV.items():
        monkeypatch.setenv(k, v)
    data = load_settings("prod").masked()
    assert data["metrics_token"] == "********"
    assert PROD_ENV["AICLOUD_METRICS_TOKEN"] not in str(data)


@pytest.mark.parametrize("raw", [bytes(32), bytes(range(32)), b"\x01\x02" * 16, b"k" * 32])
def test_a_patterned_audit_signing_key_is_refused(
    raw: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    problems = prod_problems(monkeypatch,
                             AICLOUD_AUDIT_SIGNING_KEY=base64.b64encode(raw).decode())
    assert len(problems) == 1 and problems[0].startswith("audit_signing_key is not random")


def test_sql_echo_and_a_plain_http_public_url_are_refused(
    monkeypatch: pytest.MonkeyPatch
) -> None:
    problems = prod_problems(monkeypatch, AICLOUD_DATABASE_ECHO="true",
                             AICLOUD_PUBLIC_URL="http://cloud.example.org")
    assert len(problems) == 2
    assert problems[0].startswith("database_echo is true")
    assert "public_url 'http://cloud.example.org' is not an https://" in problems[1]
    assert prod_problems(monkeypatch, AICLOUD_DATABASE_ECHO="false",
                         AICLOUD_PUBLIC_URL="https://cloud.example.org") == []
