"""GPUaaS tables. Only aicloud.products.gpuaas writes them."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from aicloud.shared.db import Base, UTCDateTime
from aicloud.shared.leases import LeaseColumns


class NodeModel(Base):
    __tablename__ = "gpuaas_nodes"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    name: Mapped[str] = mapped_column(String(255), unique=True)  # the host name
    state: Mapped[str] = mapped_column(String(16))  # ready | cordoned | draining | down
    labels: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    inventory_source: Mapped[str] = mapped_column(String(16))  # nvml | static
    simulated: Mapped[bool] = mapped_column(Boolean)
    # Where a drain ends: instances still running then are stopped.
    drain_deadline: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    state_reason: Mapped[str] = mapped_column(String(512), default="")
    last_heartbeat_at: Mapped[datetime] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class GpuModel(Base):
    __tablename__ = "gpuaas_gpus"
    __table_args__ = (UniqueConstraint("node_id", "index", name="uq_gpuaas_gpus_node_id"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    node_id: Mapped[str] = mapped_column(ForeignKey("gpuaas_nodes.id", ondelete="CASCADE"))
    index: Mapped[int] = mapped_column(Integer)
    model: Mapped[str] = mapped_column(String(32))
    name: Mapped[str] = mapped_column(String(128))
    memory_gib: Mapped[int] = mapped_column(Integer)
    uuid: Mapped[str | None] = mapped_column(String(128), nullable=True)
    healthy: Mapped[bool] = mapped_column(Boolean, default=True)
    health_detail: Mapped[str] = mapped_column(String(512), default="")


class NodeCapacityModel(Base):
    """Per node and GPU model: GPUs installed, and GPUs free for placement now (node ready,
    GPU healthy, not assigned). Derived data, kept in the transaction of every change to its
    inputs (see capacity.py), so admission's "can this ever fit" and the scheduler's best fit
    are indexed reads instead of a rebuild of every node."""

    __tablename__ = "gpuaas_node_capacity"
    __table_args__ = (
        CheckConstraint("installed > 0 AND free >= 0 AND free <= installed",
                        name="counts_in_range"),
        Index("ix_gpuaas_node_capacity_free", "gpu_model", "free", "node_id"),
        Index("ix_gpuaas_node_capacity_installed", "gpu_model", "installed"),
    )

    node_id: Mapped[str] = mapped_column(
        ForeignKey("gpuaas_nodes.id", ondelete="CASCADE"), primary_key=True)
    gpu_model: Mapped[str] = mapped_column(String(32), primary_key=True)
    installed: Mapped[int] = mapped_column(Integer)
    free: Mapped[int] = mapped_column(Integer)


class InstanceTypeModel(Base):
    __tablename__ = "gpuaas_instance_types"
    __table_args__ = (
        CheckConstraint("gpu_count >= 0 AND vcpus > 0 AND memory_gib > 0",
                        name="sizes_positive"),
    )

    name: Mapped[str] = mapped_column(String(64), primary_key=True)  # e.g. gpu.h100.1x
    gpu_model: Mapped[str] = mapped_column(String(32))
    gpu_count: Mapped[int] = mapped_column(Integer)
    vcpus: Mapped[int] = mapped_column(Integer)
    memory_gib: Mapped[int] = mapped_column(Integer)
    description: Mapped[str] = mapped_column(String(256), default="")


class TypeAllowanceModel(Base):
    """Restricts a scope to listed instance types. A scope with no rows on its path may use
    every type; rows on several levels must all allow the type."""

    __tablename__ = "gpuaas_type_allowances"
    __table_args__ = (UniqueConstraint("scope_id", "type_name",
                                       name="uq_gpuaas_type_allowances_scope_id"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    scope_id: Mapped[str] = mapped_column(String(64), index=True)
    type_name: Mapped[str] = mapped_column(
        ForeignKey("gpuaas_instance_types.name", ondelete="CASCADE"))


class InstanceModel(LeaseColumns, Base):
    __tablename__ = "gpuaas_instances"
    __table_args__ = (
        UniqueConstraint("project_id", "idempotency_key",
                         name="uq_gpuaas_instances_project_id"),
        Index("ix_gpuaas_instances_state_node", "state", "node_id"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    name: Mapped[str] = mapped_column(String(128))
    org_id: Mapped[str] = mapped_column(String(64))
    project_id: Mapped[str] = mapped_column(String(64), index=True)
    scope_path: Mapped[str] = mapped_column(String(512), index=True)
    created_by: Mapped[str] = mapped_column(String(64))
    idempotency_key: Mapped[str | None] = mapped_column(String(255), nullable=True)
    instance_type: Mapped[str] = mapped_column(ForeignKey("gpuaas_instance_types.name"))
    gpu_model: Mapped[str] = mapped_column(String(32))
    gpu_count: Mapped[int] = mapped_column(Integer)
    vcpus: Mapped[int] = mapped_column(Integer)
    memory_gib: Mapped[int] = mapped_column(Integer)
    template: Mapped[str] = mapped_column(String(16))  # shell | web-app | api-app | batch
    command: Mapped[list[str] | None] = mapped_column(JSON, nullable=True)
    priority: Mapped[int] = mapped_column(Integer, default=0)
    # Monotonic submission order (FIFO within priority); the admission time in microseconds
    # plus the id breaks ties.
    queue_order: Mapped[int] = mapped_column(BigInteger)
    state: Mapped[str] = mapped_column(String(16))
    state_reason: Mapped[str] = mapped_column(String(512))
    state_changed_at: Mapped[datetime] = mapped_column(UTCDateTime)
    stop_requested_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    stop_reason: Mapped[str | None] = mapped_column(String(512), nullable=True)
    node_id: Mapped[str | None] = mapped_column(String(40), nullable=True)
    gpu_indices: Mapped[list[int] | None] = mapped_column(JSON, nullable=True)
    provider: Mapped[str | None] = mapped_column(String(32), nullable=True)
    provider_ref: Mapped[str | None] = mapped_column(Text, nullable=True)
    endpoint_url: Mapped[str | None] = mapped_column(String(512), nullable=True)
    hold_id: Mapped[str | None] = mapped_column(String(40), nullable=True)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    # Usage is reported for [started_at, last_metered_at); the next window starts here.
    last_metered_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    exit_code: Mapped[int | None] = mapped_column(Integer, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


# The queue of one GPU model in placement order (priority, then FIFO): what a scheduler pass
# pages through and what a queue position counts.
Index("ix_gpuaas_instances_queue", InstanceModel.state, InstanceModel.gpu_model,
      InstanceModel.priority.desc(), InstanceModel.queue_order, InstanceModel.id)


class GpuAssignmentModel(Base):
    """One row per GPU held by an active instance: the primary key on the GPU makes a double
    assignment impossible whatever the scheduler does."""

    __tablename__ = "gpuaas_gpu_assignments"

    gpu_id: Mapped[str] = mapped_column(
        ForeignKey("gpuaas_gpus.id", ondelete="CASCADE"), primary_key=True)
    instance_id: Mapped[str] = mapped_column(
        ForeignKey("gpuaas_instances.id", ondelete="CASCADE"), index=True)


class TransitionModel(Base):
    __tablename__ = "gpuaas_instance_transitions"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    instance_id: Mapped[str] = mapped_column(
        ForeignKey("gpuaas_instances.id", ondelete="CASCADE"), index=True)
    from_state: Mapped[str | None] = mapped_column(String(16), nullable=True)
    to_state: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str] = mapped_column(String(512))
    at: Mapped[datetime] = mapped_column(UTCDateTime)


class InstanceEventModel(Base):
    """Something that happened to an instance besides a state change (those are transitions):
    an idle warning, an idle stop or deletion with its evidence. What the user reads with the
    instance's history."""

    __tablename__ = "gpuaas_instance_events"
    __table_args__ = (Index("ix_gpuaas_instance_events_instance_at", "instance_id", "kind",
                            "at"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    instance_id: Mapped[str] = mapped_column(
        ForeignKey("gpuaas_instances.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(32))  # idle_warning | idle_stop | ...
    message: Mapped[str] = mapped_column(String(512))
    details: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    at: Mapped[datetime] = mapped_column(UTCDateTime)


class NodeJoinTokenModel(Base):
    """A secret an operator hands to a new host: it may join the pool (``uses`` times, until
    ``expires_at``). Only the SHA-256 digest of the secret is stored."""

    __tablename__ = "gpuaas_node_join_tokens"
    __table_args__ = (CheckConstraint("uses >= 0 AND uses <= max_uses", name="uses_in_range"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    digest: Mapped[str] = mapped_column(String(64), unique=True)
    description: Mapped[str] = mapped_column(String(256), default="")
    max_uses: Mapped[int] = mapped_column(Integer)
    uses: Mapped[int] = mapped_column(Integer, default=0)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    created_by: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class NodeCredentialModel(Base):
    """What a joined node's agent authenticates with (its link, rotation). Only the SHA-256
    digest of the secret is stored; a revoked row stays as evidence."""

    __tablename__ = "gpuaas_node_credentials"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    node_id: Mapped[str] = mapped_column(
        ForeignKey("gpuaas_nodes.id", ondelete="CASCADE"), index=True)
    digest: Mapped[str] = mapped_column(String(64), unique=True)
    join_token_id: Mapped[str | None] = mapped_column(String(40), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    revoked_reason: Mapped[str] = mapped_column(String(256), default="")


class NodeLinkModel(Base):
    """Which API process holds a node's link now. ``epoch`` grows with every new link of
    the node: a process whose link's epoch is no longer the row's closes it (one link per
    node across processes)."""

    __tablename__ = "gpuaas_node_links"

    node_id: Mapped[str] = mapped_column(
        ForeignKey("gpuaas_nodes.id", ondelete="CASCADE"), primary_key=True)
    replica_id: Mapped[str] = mapped_column(String(64))
    internal_url: Mapped[str] = mapped_column(String(512))
    epoch: Mapped[int] = mapped_column(BigInteger)
    connected_at: Mapped[datetime] = mapped_column(UTCDateTime)
