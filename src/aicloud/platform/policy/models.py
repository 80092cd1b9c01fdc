"""Policy tables. Only aicloud.platform.policy writes them."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, CheckConstraint, Float, Integer, String, UniqueConstraint
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


class IdlePolicyModel(Base):
    """"GPU utilization below X % for N minutes: stop; stopped for D days: delete", set on
    an organization, department or project, for one resource class (an instance type) or
    every class (``""``). Every policy on a resource's path applies: a project may add a
    stricter rule, never loosen its organization's."""

    __tablename__ = "policy_idle_policies"
    __table_args__ = (
        UniqueConstraint("scope_id", "resource_class", name="uq_policy_idle_policies_scope_id"),
        CheckConstraint("threshold_pct > 0 AND threshold_pct <= 100", name="threshold_range"),
        CheckConstraint("idle_minutes >= 5 AND warn_minutes >= 1 AND warn_minutes < "
                        "idle_minutes", name="minutes_range"),
        CheckConstraint("delete_after_days IS NULL OR delete_after_days >= 1",
                        name="delete_after_range"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    scope_id: Mapped[str] = mapped_column(String(64))
    scope_path: Mapped[str] = mapped_column(String(512), index=True)
    resource_class: Mapped[str] = mapped_column(String(64))  # "" = every class
    threshold_pct: Mapped[float] = mapped_column(Float)
    idle_minutes: Mapped[int] = mapped_column(Integer)
    # The warning goes out this long before the stop.
    warn_minutes: Mapped[int] = mapped_column(Integer)
    delete_after_days: Mapped[int | None] = mapped_column(Integer, nullable=True)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_by: Mapped[str] = mapped_column(String(64))
