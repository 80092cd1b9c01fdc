"""Access tables. Only aicloud.platform.access writes them."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, CheckConstraint, ForeignKey, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from aicloud.shared.db import Base, UTCDateTime


class EndpointModel(Base):
    """A resource of a project published at ``/endpoints/{name}/``."""

    __tablename__ = "access_endpoints"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    name: Mapped[str] = mapped_column(String(63), unique=True)  # the URL's, platform-wide
    org_id: Mapped[str] = mapped_column(String(64))
    project_id: Mapped[str] = mapped_column(String(64), index=True)
    scope_path: Mapped[str] = mapped_column(String(512), index=True)
    resource_type: Mapped[str] = mapped_column(String(32))
    resource_id: Mapped[str] = mapped_column(String(40), index=True)
    created_by: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class EndpointKeyModel(Base):
    """A key of one endpoint: ``aiep_`` + a secret shown once, stored as its SHA-256."""

    __tablename__ = "access_endpoint_keys"
    __table_args__ = (
        CheckConstraint("rate_limit_requests > 0 AND rate_limit_window_seconds > 0",
                        name="rate_limit_positive"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    endpoint_id: Mapped[str] = mapped_column(
        ForeignKey("access_endpoints.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(128))
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    # Token bucket: up to rate_limit_requests at once, refilled at that many per window.
    rate_limit_requests: Mapped[int] = mapped_column(Integer)
    rate_limit_window_seconds: Mapped[int] = mapped_column(Integer)
    created_by: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class RateBucketModel(Base):
    """The shared token bucket of one key (every API process leases tokens from it)."""

    __tablename__ = "access_rate_buckets"

    key_id: Mapped[str] = mapped_column(
        ForeignKey("access_endpoint_keys.id", ondelete="CASCADE"), primary_key=True)
    milli_tokens: Mapped[int] = mapped_column(BigInteger)
    updated_us: Mapped[int] = mapped_column(BigInteger)  # microseconds since the epoch
