"""How the API is put on a socket: the uvicorn configuration of `serve` and `api`."""

from __future__ import annotations

import uvicorn
from fastapi import FastAPI

from aicloud.shared.config import Settings


def server_config(app: FastAPI, settings: Settings, *, host: str | None = None,
                  port: int | None = None) -> uvicorn.Config:
    """uvicorn settings for ``app``: TLS from tls_cert_file/tls_key_file when set, and
    uvicorn's own proxy-header handling off (it would believe X-Forwarded-* from 127.0.0.1);
    TransportSecurityMiddleware believes them from trusted_proxies only."""
    return uvicorn.Config(
        app, host=host or settings.host, port=port or settings.port,
        ssl_certfile=settings.tls_cert_file, ssl_keyfile=settings.tls_key_file,
        proxy_headers=False, server_header=False,
        log_config=None, access_log=False, timeout_graceful_shutdown=10,
    )


def base_url(settings: Settings, host: str, port: int) -> str:
    scheme = "https" if settings.tls_cert_file else "http"
    return f"{scheme}://{host}:{port}"
