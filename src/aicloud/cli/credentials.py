"""Where tenant-facing commands find the API and the caller's token.

``aicloud login`` stores them under the user's config directory (mode 0600);
``AICLOUD_URL`` and ``AICLOUD_TOKEN`` override what is stored.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import typer

from aicloud.cli.output import fail
from aicloud.sdk.client import ApiClient

DEFAULT_URL = "http://127.0.0.1:8080"


def config_dir() -> Path:
    return Path(os.environ.get("AICLOUD_CONFIG_DIR") or typer.get_app_dir("aicloud"))


def credentials_path() -> Path:
    return config_dir() / "credentials.json"


@dataclass
class Credentials:
    url: str
    token: str | None
    email: str | None = None


def load() -> Credentials:
    stored: dict[str, str] = {}
    path = credentials_path()
    if path.is_file():
        try:
            stored = json.loads(path.read_text())
        except ValueError:
            stored = {}
    return Credentials(
        url=os.environ.get("AICLOUD_URL") or stored.get("url") or DEFAULT_URL,
        token=os.environ.get("AICLOUD_TOKEN") or stored.get("token"),
        email=stored.get("email"),
    )


def save(creds: Credentials) -> Path:
    path = credentials_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump({"url": creds.url, "token": creds.token, "email": creds.email}, fh)
    os.chmod(path, 0o600)
    return path


def forget() -> None:
    credentials_path().unlink(missing_ok=True)


def client(*, require_token: bool = True) -> ApiClient:
    creds = load()
    if require_token and not creds.token:
        raise fail("not logged in; run `aicloud login --url URL` or set AICLOUD_TOKEN")
    return ApiClient(creds.url, creds.token)
