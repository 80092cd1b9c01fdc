"""Policy tables. Only aicloud.platform.policy writes them."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, CheckConstraint, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from aicloud.shared.db import Base, UTCDateTime


class QuotaModel(Base):
    """A limit on one resource key (e.g. ``gpu:H100``) for everything at or below a scope."""

    __tablename__ = "policy_quotas"
    __table_args__ = (
        UniqueConstraint("scope_id", "resource_key", name="uq_policy_quotas_scope_id"),
        CheckConstraint("limit_value >= 0", name="limit_non_negative"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    scope_id: Mapped[str] = mapped_column(String(64))  # org, department or project id
    scope_path: Mapped[str] = mapped_column(String(512), index=True)
    resource_key: Mapped[str] = mapped_column(String(64))
    limit_value: Mapped[int] = mapped_column(BigInteger)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)
