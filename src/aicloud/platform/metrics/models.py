"""Metrics tables. Only aicloud.platform.metrics writes them."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Float, ForeignKey, Index, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from aicloud.shared.db import Base, UTCDateTime


class SeriesModel(Base):
    """One metric of one resource (and one of its GPUs, or -1), with its latest value: what
    the Prometheus export reads without touching the points."""

    __tablename__ = "metrics_series"
    __table_args__ = (
        # "Every series of one resource": the tenant API and the idle policy.
        UniqueConstraint("resource_type", "resource_id", "metric", "gpu",
                         name="uq_metrics_series_resource_type"),
        Index("ix_metrics_series_last_at", "last_at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    resource_type: Mapped[str] = mapped_column(String(32))  # e.g. instance, node
    resource_id: Mapped[str] = mapped_column(String(64))
    metric: Mapped[str] = mapped_column(String(48))
    gpu: Mapped[int] = mapped_column(Integer)  # node-local index; -1: not a GPU's
    node_id: Mapped[str] = mapped_column(String(40))
    scope_path: Mapped[str] = mapped_column(String(512))  # "/" for the platform's own
    source: Mapped[str] = mapped_column(String(16))  # nvml | simulated | host
    last_at: Mapped[datetime] = mapped_column(UTCDateTime)
    last_value: Mapped[float] = mapped_column(Float)


class PointModel(Base):
    """A series downsampled on write: every sample of one bucket (``resolution`` seconds)
    folds into one row, so a series holds at most retention / resolution rows however often
    its node reports."""

    __tablename__ = "metrics_points"
    __table_args__ = (Index("ix_metrics_points_bucket_at", "bucket_at"),)  # retention

    # The primary key is also the index of "one series over a time range".
    series_id: Mapped[int] = mapped_column(
        ForeignKey("metrics_series.id", ondelete="CASCADE"), primary_key=True)
    bucket_at: Mapped[datetime] = mapped_column(UTCDateTime, primary_key=True)
    count: Mapped[int] = mapped_column(Integer)
    sum: Mapped[float] = mapped_column(Float)
    min: Mapped[float] = mapped_column(Float)
    max: Mapped[float] = mapped_column(Float)
