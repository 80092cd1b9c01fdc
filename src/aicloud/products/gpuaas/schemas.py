"""GPUaaS API models."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

Template = Literal["shell", "web-app", "api-app", "batch"]


class InstanceLaunch(BaseModel):
    # The GPU count comes from the instance type; a stray field such as gpu_count must be an
    # error, not silently ignored.
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    instance_type: str = Field(min_length=1, max_length=64, examples=["gpu.h100.1x"])
    template: Template = "shell"
    command: list[str] | None = Field(default=None, max_length=64,
                                      description="batch: required; others: replaces the "
                                                  "template's command")
    priority: int = Field(default=0, ge=-100, le=100)


class InstanceStop(BaseModel):
    reason: str = Field(default="stopped by user", min_length=1, max_length=256)


class InstanceTransition(BaseModel):
    from_state: str | None
    to_state: str
    reason: str
    at: datetime


class Instance(BaseModel):
    id: str
    name: str
    project_id: str
    scope_path: str
    created_by: str
    instance_type: str
    gpu_model: str
    gpu_count: int
    vcpus: int
    memory_gib: int
    template: str
    priority: int
    state: str
    state_reason: str
    state_changed_at: datetime
    queue_position: int | None = Field(description="1-based place in the queue of its GPU "
                                                   "model while admitted and waiting")
    node_id: str | None
    gpu_indices: list[int] | None
    endpoint_url: str | None
    stop_reason: str | None
    started_at: datetime | None
    ended_at: datetime | None
    exit_code: int | None
    created_at: datetime
    transitions: list[InstanceTransition] = Field(default_factory=list)


class InstanceType(BaseModel):
    name: str
    gpu_model: str
    gpu_count: int
    vcpus: int
    memory_gib: int
    description: str


class Gpu(BaseModel):
    index: int
    model: str
    name: str
    memory_gib: int
    uuid: str | None
    healthy: bool
    health_detail: str
    instance_id: str | None = None


class Node(BaseModel):
    id: str
    name: str
    state: str
    state_reason: str
    labels: dict[str, str]
    inventory_source: str
    simulated: bool = Field(description="True when the GPUs are a static inventory, not "
                                        "hardware read through NVML")
    last_heartbeat_at: datetime
    drain_deadline: datetime | None
    gpus: list[Gpu]


class NodeStateChange(BaseModel):
    grace_seconds: int = Field(default=300, ge=0, le=7 * 24 * 3600,
                               description="drain: how long running instances may finish")
    reason: str = Field(default="", max_length=256)


class LogOutput(BaseModel):
    data: str
    offset: int
    next_offset: int
    complete: bool


class InstanceEvent(BaseModel):
    id: str
    kind: str = Field(description="idle_warning, idle_stop, idle_delete_warning")
    message: str
    details: dict[str, object] = Field(description="For idle events: the policy and the "
                                                   "metric window that showed the idleness")
    at: datetime


class JoinTokenCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    expires_in_seconds: int = Field(default=3600, ge=60, le=30 * 86400,
                                    description="How long the token may be used (1 min..30 d).")
    uses: int = Field(default=1, ge=1, le=1000, description="How many hosts may join with it.")
    description: str = Field(default="", max_length=256)


class JoinToken(BaseModel):
    id: str
    description: str
    max_uses: int
    uses: int
    expires_at: datetime
    revoked_at: datetime | None
    created_by: str
    created_at: datetime


class JoinTokenCreated(JoinToken):
    token: str = Field(description="The secret: shown once, only its digest is stored.")


class GpuInventory(BaseModel):
    model_config = ConfigDict(extra="forbid")

    index: int = Field(ge=0, le=1023)
    model: str = Field(min_length=1, max_length=32)
    name: str = Field(max_length=128)
    memory_gib: int = Field(ge=0, le=1 << 20)
    uuid: str | None = Field(default=None, max_length=128)
    healthy: bool = True
    health_detail: str = Field(default="", max_length=512)


class NodeInventory(BaseModel):
    """What an agent reports about its host (join, and every heartbeat over the link)."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=255, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    inventory_source: str = Field(min_length=1, max_length=16)
    simulated: bool
    gpus: list[GpuInventory] = Field(default_factory=list, max_length=1024)
    labels: dict[str, str] = Field(default_factory=dict, max_length=64)


class NodeJoin(BaseModel):
    model_config = ConfigDict(extra="forbid")

    token: str = Field(min_length=1, max_length=256)
    node: NodeInventory


class NodeJoined(BaseModel):
    node_id: str
    node_name: str
    credential_id: str
    credential: str = Field(description="The node's secret: shown once; keep it 0600.")


class NodeRevoke(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: str = Field(default="", max_length=256)
