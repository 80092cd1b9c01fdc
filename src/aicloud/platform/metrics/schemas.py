"""API models of metrics."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field


class Point(BaseModel):
    at: datetime = Field(description="Start of the window")
    avg: float
    min: float
    max: float
    count: int = Field(description="Samples folded into the window")


class SeriesOut(BaseModel):
    metric: str = Field(description="cpu_cores, memory_bytes, gpu_utilization_pct, "
                                    "gpu_memory_used_bytes, gpu_power_watts, gpu_temperature_c")
    unit: str
    gpu: int | None = Field(description="Node-local GPU index; null for the workload's own "
                                        "CPU and memory")
    source: str = Field(description="nvml (hardware), simulated (NOT hardware: a demo "
                                    "source shaped by the workload's CPU use) or host")
    simulated: bool
    points: list[Point]


class MetricsOut(BaseModel):
    resource_id: str
    start: datetime = Field(alias="from")
    end: datetime = Field(alias="to")
    step_seconds: int
    simulated: bool = Field(description="Any series comes from the simulated GPU source")
    series: list[SeriesOut]

    model_config = {"populate_by_name": True}
