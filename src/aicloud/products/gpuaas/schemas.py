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
