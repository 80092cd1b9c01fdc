from __future__ import annotations

import base64

import pytest

from aicloud.shared.config import PROFILES, ConfigError, load_settings, mask_url_password

PROD_ENV = {
    "AICLOUD_DATABASE_URL": "postgresql://aicloud:s3cret@db.internal:5432/aicloud",
    "AICLOUD_SECRET_KEY": "x" * 48,
    "AICLOUD_AUDIT_SIGNING_KEY": base64.b64encode(bytes(range(32))).decode(),
}


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
    # sqlite, secret, bootstrap admin, cookies, audit signing key
    assert len(info.value.problems) == 3 + 1 + 1
    for needle in ("SQLite", "secret_key", "bootstrap_admin_enabled", "cookie_secure",
                   "audit_signing_key"):
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
    assert data["database_url"] == "postgresql://aicloud:********@db.internal:5432/aicloud"


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
