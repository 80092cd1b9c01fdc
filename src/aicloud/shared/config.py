"""Configuration: one Settings model, five environment profiles.

A profile is a YAML file (deploy/profiles/<name>.yaml) that only sets configuration values;
every key can be overridden by an ``AICLOUD_<KEY>`` environment variable (nested keys with
``__``). Precedence, highest first: explicit keyword arguments, environment, profile file,
defaults.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import json
import os
import re
import ssl
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, Field, SecretStr, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from aicloud.shared.secret_strength import (
    HOW_TO_GENERATE,
    weak_raw_key_reason,
    weak_secret_reason,
)

PROFILES = ("kind", "dev", "demo", "staging", "prod")
DEFAULT_PROFILE = "dev"
# A well-known value that is fine on a laptop and refused by strict profiles.
INSECURE_DEFAULT_SECRET = "insecure-dev-secret-change-me"
_HOST_NAME = re.compile(r"(?=.{1,253}$)([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.?)+")


class ConfigError(Exception):
    """The configuration cannot be loaded or is unsafe for its profile."""

    def __init__(self, problems: list[str], profile: str | None = None):
        self.problems = problems
        self.profile = profile
        head = f"profile {profile!r} refuses to start" if profile else "invalid configuration"
        super().__init__(head + ":\n" + "\n".join(f"  - {p}" for p in problems))


class GpuSpec(BaseModel):
    index: int
    model: str
    memory_gib: int
    uuid: str | None = None
    healthy: bool = True


class InventoryConfig(BaseModel):
    """Where GPU inventory comes from when no NVML device is present."""

    source: Literal["auto", "nvml", "static"] = "auto"
    simulated: bool = True
    static_gpus: list[GpuSpec] = Field(default_factory=list)


class ProvidersConfig(BaseModel):
    compute: str = "local"
    inventory: InventoryConfig = Field(default_factory=InventoryConfig)
    # Where the local provider keeps each workload's files. A relative path is resolved
    # against the working dir once, when the settings load: the workloads' supervisors run
    # in other directories.
    local_root: str = Field(default="var/workloads", validate_default=True)
    # What the local provider runs tenant code in. bwrap: bubblewrap + pasta, a uid of its own
    # per workload (README "Local provider"); none: plain processes of the server's user, for
    # a laptop only, refused by strict profiles; auto: bwrap when this host can run it, else
    # none with a loud warning.
    local_sandbox: Literal["bwrap", "none", "auto"] = "bwrap"
    # The first host uid given to sandboxed workloads (one uid each, upwards from here).
    local_sandbox_uid_base: int = Field(default=2_000_000_000, ge=65536, le=4_000_000_000)

    @field_validator("local_root")
    @classmethod
    def _absolute_root(cls, value: str) -> str:
        return str(Path(value).resolve()) if value else value


class TerminalConfig(BaseModel):
    """Terminal sessions on a node (platform/access/terminal_keeper.py): how long a shell
    lives, what its recording holds, how long recordings are kept."""

    # Closed after this long without input, resize or output (0: never).
    idle_timeout_seconds: float = Field(default=3600.0, ge=0)
    # A detached session (its client's connection dropped) is closed after this long.
    reattach_window_seconds: float = Field(default=900.0, ge=0)
    # An attached client that sends no keepalive for this long is detached (0: not checked).
    keepalive_timeout_seconds: float = Field(default=0.0, ge=0)
    # Output kept per session for a client that reattaches from where it stopped.
    ring_buffer_bytes: int = Field(default=1 << 20, ge=4096, le=64 << 20)
    max_sessions_per_workload: int = Field(default=16, ge=1, le=256)
    # Record what users type too (passwords typed at a prompt included), not only output.
    record_input: bool = False
    # Where the node writes asciicast recordings; a relative path resolves when loading.
    recordings_dir: str = Field(default="var/terminal-recordings", validate_default=True)
    # Recordings last written longer ago than this are deleted.
    recording_retention_days: float = Field(default=90.0, gt=0)

    @field_validator("recordings_dir")
    @classmethod
    def _absolute_dir(cls, value: str) -> str:
        return str(Path(value).resolve()) if value else value


class AccessSettings(BaseModel):
    """Reaching workloads through the platform (platform/access, docs/access.md)."""

    # Per-app subdomain mode: apps are served at {resource_id}.{apps_host_suffix}, each its
    # own origin (e.g. "apps.example.org" with a wildcard DNS record and certificate). Unset:
    # path mode only (/apps/{resource_id}/ on the API's host).
    apps_host_suffix: str | None = None
    # Path mode: app pages get `Content-Security-Policy: sandbox ...` (an opaque origin), so
    # their scripts cannot use the user's platform session. Off only for trusted apps.
    apps_path_sandbox: bool = True
    upstream_connect_timeout_seconds: float = Field(default=5.0, gt=0, le=60)
    upstream_timeout_seconds: float = Field(default=60.0, gt=0, le=3600)
    # How often each API process bills the endpoint requests it served.
    meter_flush_seconds: float = Field(default=2.0, gt=0, le=60)

    @field_validator("apps_host_suffix")
    @classmethod
    def _check_suffix(cls, value: str | None) -> str | None:
        if value is None or value.strip() == "":
            return None
        value = value.strip().lower().strip(".")
        if not _HOST_NAME.fullmatch(value) or "." not in value:
            raise ValueError(f"access.apps_host_suffix: {value!r} is not a host name")
        return value


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="AICLOUD_",
        env_nested_delimiter="__",
        extra="forbid",
    )

    profile: str = DEFAULT_PROFILE
    # strict profiles refuse to start when any safety check fails (staging, prod).
    strict: bool = False

    database_url: str = "sqlite:///var/aicloud.db"
    database_echo: bool = False
    # Database connections per process (no overflow). The API derives from it how many
    # requests may use the database at once (the pool less a reserve for background work)
    # and its thread pool (aicloud.api.server). A request, or a background pass, that waits
    # longer than database_pool_timeout_seconds for a connection fails: the API answers 503
    # with Retry-After instead of hanging.
    database_pool_size: int = Field(default=24, ge=2, le=500)
    database_pool_timeout_seconds: float = Field(default=3.0, gt=0, le=30)
    # Bring the schema to head when a server starts; strict profiles migrate explicitly.
    auto_migrate: bool = True

    host: str = "127.0.0.1"
    port: int = 8080
    public_url: str | None = None
    # How the other API processes reach this one (a node's streams are relayed to the
    # process holding its link); default http(s)://host:port, 127.0.0.1 for a wildcard host.
    internal_url: str | None = None

    secret_key: SecretStr = SecretStr(INSECURE_DEFAULT_SECRET)
    secrets_source: Literal["env", "file", "profile"] = "profile"

    bootstrap_admin_enabled: bool = True
    bootstrap_admin_email: str = "admin@aicloud.local"

    cookie_secure: bool = False
    # Every request must arrive over HTTPS, served by this process (tls_cert_file and
    # tls_key_file, PEM) or by a proxy at one of trusted_proxies that terminates TLS and says
    # so in X-Forwarded-Proto. Plain HTTP is refused (403) and HTTPS answers carry HSTS.
    tls_required: bool = False
    tls_cert_file: str | None = None
    tls_key_file: str | None = None
    # Addresses or networks (CIDR) whose X-Forwarded-Proto and X-Forwarded-For are believed;
    # from any other peer those headers are ignored. Env: a JSON list or comma-separated.
    trusted_proxies: Annotated[list[str], NoDecode] = Field(default_factory=list)
    hsts_max_age_seconds: int = Field(default=31_536_000, ge=0)
    # Host names (no port) the API answers to; empty answers any. Env: JSON list or commas.
    allowed_hosts: Annotated[list[str], NoDecode] = Field(default_factory=list)
    # /metrics is open to anyone, or needs `Authorization: Bearer <metrics_token>` (and is
    # not served at all without a token).
    metrics_public: bool = True
    metrics_token: SecretStr | None = None
    # Serve /docs, /redoc and /openapi.json (contracts/openapi.json is the published contract).
    docs_enabled: bool = True

    log_format: Literal["console", "json"] = "console"
    log_level: str = "INFO"

    controllers_enabled: bool = True
    controller_interval_seconds: float = 2.0
    # How often an API process writes the credential uses it noted (last_used_at of API keys
    # and sessions; at most once a minute per credential, see iam/last_used.py).
    last_used_flush_interval_seconds: float = Field(default=10.0, gt=0, le=60)
    idempotency_ttl_hours: int = 24

    required_evidence: list[str] = Field(default_factory=list)
    providers: ProvidersConfig = Field(default_factory=ProvidersConfig)
    terminal: TerminalConfig = Field(default_factory=TerminalConfig)
    access: AccessSettings = Field(default_factory=AccessSettings)

    # GPUaaS: `serve` also runs a node agent for this machine (kind, dev); a node whose agent
    # is silent this long is down; running instances report usage this often.
    agent_embedded: bool = False
    node_heartbeat_timeout_seconds: float = Field(default=30.0, gt=0)
    usage_report_interval_seconds: float = Field(default=30.0, gt=0, le=60)
    # Workload metrics kept by the control plane: one-minute buckets, this many days.
    metrics_retention_days: float = Field(default=7.0, gt=0, le=400)
    # Seed a default price list (gpu_seconds:H100...) when none exists (kind, dev, demo).
    seed_default_prices: bool = False
    # Budget webhooks go to public addresses only (https only in strict profiles); these
    # are the exceptions: CIDRs ("10.20.0.0/16") or host names ("hooks.internal").
    webhook_allowed_targets: list[str] = Field(default_factory=list)

    # Ed25519 key that signs audit checkpoints: base64 of the 32-byte raw private key. Without
    # one, non-strict profiles derive a development key from secret_key (and say so).
    audit_signing_key: SecretStr | None = None
    # Public keys (base64, 32 bytes raw) of earlier signing keys, so checkpoints signed before
    # a key rotation still verify.
    audit_trusted_public_keys: list[str] = Field(default_factory=list)
    audit_checkpoint_interval_seconds: float = Field(default=300.0, gt=0)
    # How often the audit-sealer controller chains committed events (an event is sealed
    # within about this long of its commit; `audit verify` flags one unsealed after a minute).
    audit_seal_interval_seconds: float = Field(default=0.2, gt=0, le=10)
    # Where signed checkpoints are published outside the database, for `audit verify
    # --against` and `ledger check --against`: "dir:PATH" (a relative PATH is resolved against
    # the working directory when the settings load). None: not published.
    audit_anchor_sink: str | None = None

    @field_validator("audit_anchor_sink")
    @classmethod
    def _resolve_anchor_sink(cls, value: str | None) -> str | None:
        if value is None or value.strip() == "":
            return None
        if not value.startswith("dir:") or value == "dir:":
            raise ValueError("audit_anchor_sink: expected dir:PATH")
        return "dir:" + str((Path.cwd() / Path(value[4:]).expanduser()).resolve())

    @field_validator("audit_signing_key")
    @classmethod
    def _check_signing_key(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and value.get_secret_value() == "":
            return None  # an empty environment variable means "not set"
        if value is not None:
            _raw_key(value.get_secret_value(), "audit_signing_key")
        return value

    @field_validator("tls_cert_file", "tls_key_file", "metrics_token", mode="before")
    @classmethod
    def _empty_means_unset(cls, value: Any) -> Any:
        return None if value == "" else value

    @field_validator("trusted_proxies", "allowed_hosts", mode="before")
    @classmethod
    def _parse_list(cls, value: Any) -> Any:
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("["):
                return json.loads(text)
            return [part.strip() for part in text.split(",") if part.strip()]
        return value

    @field_validator("trusted_proxies")
    @classmethod
    def _check_proxies(cls, value: list[str]) -> list[str]:
        networks = []
        for entry in value:
            try:
                networks.append(str(ipaddress.ip_network(entry, strict=False)))
            except ValueError:
                raise ValueError(
                    f"trusted_proxies: {entry!r} is not an IP address or network") from None
        return networks

    @model_validator(mode="after")
    def _cert_and_key_together(self) -> Settings:
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            raise ValueError("tls_cert_file and tls_key_file are set together (PEM files)")
        return self

    @field_validator("webhook_allowed_targets")
    @classmethod
    def _check_webhook_targets(cls, value: list[str]) -> list[str]:
        for entry in value:
            text = entry.strip()
            if "/" in text or ":" in text or text.replace(".", "").isdigit():
                try:
                    ipaddress.ip_network(text, strict=False)
                except ValueError:
                    raise ValueError(f"webhook_allowed_targets: {entry!r} is not a CIDR or "
                                     "an address") from None
            elif not _HOST_NAME.fullmatch(text):
                raise ValueError(f"webhook_allowed_targets: {entry!r} is not a host name")
        return value

    @field_validator("audit_trusted_public_keys")
    @classmethod
    def _check_public_keys(cls, value: list[str]) -> list[str]:
        for key in value:
            _raw_key(key, "audit_trusted_public_keys")
        return value

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, env_settings, _ProfileSource(settings_cls))

    # --- safety ---------------------------------------------------------------------------

    def safety_problems(self) -> list[str]:
        """Every reason this configuration is unsafe for production use (empty when safe)."""
        problems: list[str] = []
        if not self.database_url:
            problems.append("database_url is not set; set AICLOUD_DATABASE_URL")
        elif self.database_url.startswith("sqlite"):
            problems.append(
                "database_url uses SQLite; set AICLOUD_DATABASE_URL to a PostgreSQL URL"
            )
        elif problem := _database_tls_problem(self.database_url):
            problems.append(problem)
        secret = self.secret_key.get_secret_value()
        if not secret or secret == INSECURE_DEFAULT_SECRET:
            problems.append("secret_key is missing or the insecure default; set "
                            f"AICLOUD_SECRET_KEY to a random value, e.g. from `{HOW_TO_GENERATE}`")
        elif reason := weak_secret_reason(secret):
            problems.append(f"secret_key {reason}; set AICLOUD_SECRET_KEY to a random value, "
                            f"e.g. from `{HOW_TO_GENERATE}`")
        if self.bootstrap_admin_enabled:
            problems.append(
                "bootstrap_admin_enabled is true; create admins with `aicloud admin bootstrap` "
                "and set AICLOUD_BOOTSTRAP_ADMIN_ENABLED=false"
            )
        if not self.cookie_secure:
            problems.append("cookie_secure is false; session cookies would travel without TLS")
        if not self.tls_required:
            problems.append("tls_required is false")
        problems.extend(self._transport_problems())
        if self.metrics_public:
            problems.append("metrics_public is true; anyone could read /metrics: set "
                            "AICLOUD_METRICS_PUBLIC=false and scrape with AICLOUD_METRICS_TOKEN")
        if self.metrics_token is not None and (
                reason := weak_secret_reason(self.metrics_token.get_secret_value())):
            problems.append(f"metrics_token {reason}; e.g. use `{HOW_TO_GENERATE}`")
        if self.providers.compute == "local" and self.providers.local_sandbox != "bwrap":
            problems.append(
                f"providers.local_sandbox is {self.providers.local_sandbox!r}; strict profiles "
                "run tenant workloads only in the bubblewrap sandbox: set "
                "AICLOUD_PROVIDERS__LOCAL_SANDBOX=bwrap")
        if self.audit_signing_key is None:
            problems.append(
                "audit_signing_key is not set; strict profiles sign audit checkpoints with "
                "their own Ed25519 key: set AICLOUD_AUDIT_SIGNING_KEY (base64 of a raw "
                "32-byte key, e.g. from `aicloud audit generate-key`)")
        elif reason := weak_raw_key_reason(
                _raw_key(self.audit_signing_key.get_secret_value(), "audit_signing_key")):
            problems.append(f"audit_signing_key {reason}; generate one with "
                            "`aicloud audit generate-key`")
        if self.audit_anchor_sink is None:
            problems.append(
                "audit_anchor_sink is not set; without signed checkpoints published outside "
                "the database, a rollback of the audit log or the ledger goes unnoticed: set "
                "AICLOUD_AUDIT_ANCHOR_SINK=dir:/path/on/another/volume")
        if self.database_echo:
            problems.append("database_echo is true; every SQL statement would be logged with "
                            "its parameters (password hashes, token digests, emails)")
        if self.public_url and not self.public_url.startswith("https://"):
            problems.append(f"public_url {self.public_url!r} is not an https:// address")
        return problems

    def _transport_problems(self) -> list[str]:
        problems: list[str] = []
        if self.tls_required and self.tls_cert_file is None and not self.trusted_proxies:
            problems.append(
                "tls_required is true but nothing provides TLS: set AICLOUD_TLS_CERT_FILE and "
                "AICLOUD_TLS_KEY_FILE (PEM) to serve HTTPS, or AICLOUD_TRUSTED_PROXIES to the "
                "addresses of the proxy that terminates TLS")
        if self.tls_cert_file is not None and self.tls_key_file is not None:
            try:
                ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(
                    self.tls_cert_file, self.tls_key_file)
            except (OSError, ssl.SSLError) as exc:
                problems.append(f"tls_cert_file/tls_key_file cannot be loaded ({exc}); set "
                                "them to a readable PEM certificate chain and its private key")
        for network in self.trusted_proxies:
            if ipaddress.ip_network(network).prefixlen == 0:
                problems.append(f"trusted_proxies contains {network}, which trusts every "
                                "address; list only the TLS-terminating proxies")
        if self.tls_required and self.hsts_max_age_seconds == 0:
            problems.append("hsts_max_age_seconds is 0; browsers would not be told to keep "
                            "to HTTPS")
        return problems

    def validate_for_start(self) -> None:
        """Raise ConfigError listing every problem when a strict profile is unsafe."""
        if self.strict:
            problems = self.safety_problems()
            if problems:
                raise ConfigError(problems, self.profile)

    def masked(self) -> dict[str, Any]:
        """The effective configuration with secrets masked, for display."""
        data = self.model_dump(mode="json")
        data["secret_key"] = "********" if self.secret_key.get_secret_value() else ""
        data["audit_signing_key"] = "********" if self.audit_signing_key else None
        data["metrics_token"] = "********" if self.metrics_token else None
        data["database_url"] = mask_url_password(self.database_url)
        return data

    @property
    def sqlite_path(self) -> Path | None:
        prefix = "sqlite:///"
        if self.database_url.startswith(prefix):
            rest = self.database_url[len(prefix) :]
            return None if rest in ("", ":memory:") else Path(rest)
        return None


def _raw_key(value: str, name: str) -> bytes:
    """Decode a base64 Ed25519 key (32 raw bytes) or raise a message naming the setting."""
    try:
        raw = base64.b64decode(value.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError(f"{name}: not valid base64") from None
    if len(raw) != 32:
        raise ValueError(f"{name}: expected 32 bytes (a raw Ed25519 key), got {len(raw)}")
    return raw


_SECURE_SSLMODES = ("require", "verify-ca", "verify-full")


def _database_tls_problem(url: str) -> str | None:
    """A PostgreSQL URL to another machine must ask for TLS (sslmode), or PGSSLMODE must."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        return "database_url is not a valid database URL"
    if not parsed.drivername.startswith("postgresql"):
        return None
    host = parsed.host or str(parsed.query.get("host") or "")
    if not host or host.startswith("/") or host == "localhost":
        return None  # a Unix socket or this machine: nothing travels over a network
    try:
        if ipaddress.ip_address(host).is_loopback:
            return None
    except ValueError:
        pass
    sslmode = parsed.query.get("sslmode") or os.environ.get("PGSSLMODE")
    if sslmode in _SECURE_SSLMODES:
        return None
    return (f"database_url connects to PostgreSQL at {host} without requiring TLS "
            f"(sslmode={sslmode or 'unset'}); add ?sslmode=verify-full (or require) to "
            "AICLOUD_DATABASE_URL")


def mask_url_password(url: str) -> str:
    scheme, sep, rest = url.partition("://")
    if not sep or "@" not in rest:
        return url
    creds, _, host = rest.rpartition("@")
    user, colon, _ = creds.partition(":")
    return f"{scheme}://{user}{':********' if colon else ''}@{host}"


# --- profile files ------------------------------------------------------------------------


def profile_dirs() -> list[Path]:
    """Where profile files are looked up, first match wins."""
    dirs: list[Path] = []
    if env_dir := os.environ.get("AICLOUD_PROFILE_DIR"):
        dirs.append(Path(env_dir))
    dirs.append(Path.cwd() / "deploy" / "profiles")
    here = Path(__file__).resolve()
    dirs.append(here.parents[1] / "_profiles")  # installed wheel
    dirs.append(here.parents[3] / "deploy" / "profiles")  # editable install from a checkout
    return dirs


def load_profile_file(name: str) -> dict[str, Any]:
    if name not in PROFILES:
        raise ConfigError([f"unknown profile {name!r}; choose one of {', '.join(PROFILES)}"])
    for d in profile_dirs():
        path = d / f"{name}.yaml"
        if path.is_file():
            data = yaml.safe_load(path.read_text()) or {}
            if not isinstance(data, dict):
                raise ConfigError([f"{path}: expected a mapping at the top level"])
            data.setdefault("profile", name)
            return data
    searched = ", ".join(str(d) for d in profile_dirs())
    raise ConfigError([f"profile file {name}.yaml not found (searched {searched})"])


class _ProfileSource(PydanticBaseSettingsSource):
    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        raise NotImplementedError  # unused: __call__ returns the whole mapping

    def __call__(self) -> dict[str, Any]:
        name = os.environ.get("AICLOUD_PROFILE", DEFAULT_PROFILE)
        return load_profile_file(name)


def load_settings(profile: str | None = None, **overrides: Any) -> Settings:
    """Load settings for a profile (default: $AICLOUD_PROFILE or dev)."""
    if profile is not None:
        old = os.environ.get("AICLOUD_PROFILE")
        os.environ["AICLOUD_PROFILE"] = profile
        try:
            return Settings(**overrides)
        finally:
            if old is None:
                os.environ.pop("AICLOUD_PROFILE", None)
            else:
                os.environ["AICLOUD_PROFILE"] = old
    return Settings(**overrides)


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return load_settings()
