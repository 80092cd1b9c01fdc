"""Workload metrics: recording what nodes report, retention, and reading series back.

Product-neutral: a series belongs to a resource (type and id) at a scope path; the product
that calls :func:`record_samples` says which resources a node may report on (``owners``) and
where each lives, so a node can never write a series of another node's workload. Samples
arrive in the node's own shape (see ``adapters/metrics/base.py``), untrusted: each value is
checked and a bad one is dropped and counted, never stored.

Bounded retention, by downsampling on write: samples fold into one row per series and
``RESOLUTION`` (60 s) bucket (count, sum, min, max), so a series holds at most
retention / resolution rows whatever the report interval; :func:`prune` deletes buckets and
series older than the retention (``metrics_retention_days``).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import delete, func, select, tuple_, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from aicloud.platform.metrics.models import PointModel, SeriesModel
from aicloud.shared.errors import ValidationFailed

RESOLUTION = timedelta(seconds=60)
# A node's report may be late (buffered across a lost link) but not from the future.
MAX_AGE = timedelta(hours=1)
MAX_SKEW = timedelta(seconds=60)
MAX_SAMPLES = 10_000
NOT_A_GPU = -1

# metric -> (unit, lowest, highest accepted value)
METRICS: dict[str, tuple[str, float, float]] = {
    "cpu_cores": ("cores", 0.0, 4096.0),
    "memory_bytes": ("bytes", 0.0, 2.0**50),
    "gpu_utilization_pct": ("percent", 0.0, 100.0),
    "gpu_memory_used_bytes": ("bytes", 0.0, 2.0**44),
    "gpu_power_watts": ("watts", 0.0, 5000.0),
    "gpu_temperature_c": ("celsius", -50.0, 200.0),
}
GPU_METRICS = ("gpu_utilization_pct", "gpu_memory_used_bytes", "gpu_power_watts",
               "gpu_temperature_c")
_GPU_FIELDS = {"gpu_utilization_pct": "utilization_pct",
               "gpu_memory_used_bytes": "memory_used_bytes",
               "gpu_power_watts": "power_watts", "gpu_temperature_c": "temperature_c"}
_SOURCES = frozenset({"nvml", "simulated"})


@dataclass(frozen=True)
class Owner:
    """A resource a node may report on, and where it lives."""

    resource_type: str
    scope_path: str


@dataclass
class RecordResult:
    values: int = 0  # values folded into buckets
    dropped: int = 0  # values or samples refused (unknown resource, out of range, too old)
    problems: list[str] = field(default_factory=list)  # the first few, for the node's log

    def refuse(self, why: str, n: int = 1) -> None:
        self.dropped += n
        if len(self.problems) < 10:
            self.problems.append(why)


def _bucket(at: datetime) -> datetime:
    epoch = int(at.timestamp())
    step = int(RESOLUTION.total_seconds())
    return datetime.fromtimestamp(epoch - epoch % step, UTC)


def _number(value: Any, metric: str) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    value = float(value)
    _, low, high = METRICS[metric]
    return value if math.isfinite(value) and low <= value <= high else None


def _at(value: Any, now: datetime) -> datetime | None:
    if not isinstance(value, str) or len(value) > 40:
        return None
    try:
        at = datetime.fromisoformat(value)
    except ValueError:
        return None
    if at.tzinfo is None:
        return None
    at = at.astimezone(UTC)
    return at if now - MAX_AGE <= at <= now + MAX_SKEW else None


_Key = tuple[str, str, str, int]  # resource type, resource id, metric, gpu


def _values(sample: Any, node_id: str, owners: Mapping[str, Owner], now: datetime,
            result: RecordResult) -> list[tuple[_Key, datetime, float, str, str]]:
    """(series key, at, value, scope path, source) of every acceptable value of a sample."""
    if not isinstance(sample, dict):
        raise ValidationFailed("each sample must be a JSON object", field="samples")
    rid = sample.get("resource_id")
    if rid is None:
        rtype, rid, path = "node", node_id, "/"
    elif isinstance(rid, str) and rid in owners:
        rtype, path = owners[rid].resource_type, owners[rid].scope_path
    else:
        result.refuse(f"resource {str(rid)[:64]!r} is not one this node runs")
        return []
    at = _at(sample.get("at"), now)
    if at is None:
        result.refuse(f"{rid}: 'at' missing, not an aware ISO time, or outside "
                      f"[now - {MAX_AGE}, now + {MAX_SKEW}]")
        return []
    out = []
    if rtype != "node":
        for metric in ("cpu_cores", "memory_bytes"):
            raw = sample.get(metric)
            if raw is None:
                continue
            value = _number(raw, metric)
            if value is None:
                result.refuse(f"{rid}: {metric} {raw!r} out of range")
            else:
                out.append(((rtype, rid, metric, NOT_A_GPU), at, value, path, "host"))
    gpus = sample.get("gpus") or []
    if not isinstance(gpus, list) or len(gpus) > 64:
        result.refuse(f"{rid}: 'gpus' must be a list of at most 64 readings")
        return out
    for gpu in gpus:
        index = gpu.get("index") if isinstance(gpu, dict) else None
        source = gpu.get("source") if isinstance(gpu, dict) else None
        if (isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < 1024
                or source not in _SOURCES):
            result.refuse(f"{rid}: a GPU reading without a valid index and source")
            continue
        for metric, name in _GPU_FIELDS.items():
            value = _number(gpu.get(name), metric)
            if value is None:
                result.refuse(f"{rid}: GPU {index} {name} {gpu.get(name)!r} out of range")
            else:
                out.append(((rtype, rid, metric, index), at, value, path, source))
    return out


def _insert(session: Session) -> Any:
    return pg_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert


def record_samples(session: Session, node_id: str, samples: Iterable[Any], *,
                   owners: Mapping[str, Owner], now: datetime) -> RecordResult:
    """Fold a node's samples into their series, in the caller's transaction.

    ``owners``: the resources this node may report on (resource id -> type and scope path),
    decided by the caller from what it placed on the node; samples of any other resource are
    dropped. Samples without a resource are the node's own (its free GPUs)."""
    samples = list(samples)
    if len(samples) > MAX_SAMPLES:
        raise ValidationFailed(f"at most {MAX_SAMPLES} samples per report", field="samples")
    result = RecordResult()
    values = [v for s in samples for v in _values(s, node_id, owners, now, result)]
    if not values:
        return result
    # The latest value of each series, and each bucket's fold, before touching the database:
    # one statement may not update the same bucket twice.
    latest: dict[_Key, tuple[datetime, float, str, str]] = {}
    buckets: dict[tuple[_Key, datetime], list[float]] = {}
    for key, at, value, path, source in values:
        if key not in latest or at >= latest[key][0]:
            latest[key] = (at, value, path, source)
        fold = buckets.setdefault((key, _bucket(at)), [0, 0.0, value, value])
        fold[0] += 1
        fold[1] += value
        fold[2] = min(fold[2], value)
        fold[3] = max(fold[3], value)
    ids = _series_ids(session, node_id, latest)
    insert = _insert(session)
    lo, hi = ((func.least, func.greatest) if session.get_bind().dialect.name == "postgresql"
              else (func.min, func.max))
    rows = [{"series_id": ids[key], "bucket_at": bucket, "count": n, "sum": total,
             "min": low, "max": high}
            for (key, bucket), (n, total, low, high) in sorted(
                buckets.items(), key=lambda kv: (ids[kv[0][0]], kv[0][1]))]
    for i in range(0, len(rows), 1000):
        stmt = insert(PointModel).values(rows[i:i + 1000])
        session.execute(stmt.on_conflict_do_update(
            index_elements=["series_id", "bucket_at"],
            set_={"count": PointModel.count + stmt.excluded.count,
                  "sum": PointModel.sum + stmt.excluded.sum,
                  "min": lo(PointModel.min, stmt.excluded.min),
                  "max": hi(PointModel.max, stmt.excluded.max)}))
    result.values = len(values)
    return result


def _series_ids(session: Session, node_id: str,
                latest: dict[_Key, tuple[datetime, float, str, str]]) -> dict[_Key, int]:
    """The id of every series in ``latest``, created if new; each one's latest value moved
    forward (never back: a late report does not undo a newer one)."""
    keys = sorted(latest)
    found: dict[_Key, tuple[int, datetime]] = {}

    def load(wanted: list[_Key]) -> None:
        for i in range(0, len(wanted), 300):
            for row in session.execute(select(
                    SeriesModel.id, SeriesModel.resource_type, SeriesModel.resource_id,
                    SeriesModel.metric, SeriesModel.gpu, SeriesModel.last_at).where(
                    tuple_(SeriesModel.resource_type, SeriesModel.resource_id,
                           SeriesModel.metric, SeriesModel.gpu).in_(wanted[i:i + 300]))):
                found[(row.resource_type, row.resource_id, row.metric, row.gpu)] = (
                    row.id, row.last_at)

    load(keys)
    missing = [k for k in keys if k not in found]
    if missing:
        insert = _insert(session)
        session.execute(insert(SeriesModel).values([
            {"resource_type": k[0], "resource_id": k[1], "metric": k[2], "gpu": k[3],
             "node_id": node_id, "scope_path": latest[k][2], "source": latest[k][3],
             "last_at": latest[k][0], "last_value": latest[k][1]} for k in missing])
            .on_conflict_do_nothing())
        load(missing)
    moved = [{"id": found[k][0], "node_id": node_id, "scope_path": latest[k][2],
              "source": latest[k][3], "last_at": latest[k][0], "last_value": latest[k][1]}
             for k in keys if latest[k][0] > found[k][1]]
    if moved:
        session.execute(update(SeriesModel), moved)
    return {k: found[k][0] for k in keys}


def prune(session: Session, *, now: datetime, retention: timedelta) -> int:
    """Delete the buckets older than ``retention``, then the series with nothing newer;
    returns the buckets deleted."""
    cutoff = now - retention
    n = session.execute(delete(PointModel).where(PointModel.bucket_at < cutoff)).rowcount
    session.execute(delete(SeriesModel).where(SeriesModel.last_at < cutoff))
    return int(n or 0)


# --- reading -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Bucket:
    at: datetime  # start of the window
    count: int
    avg: float
    min: float
    max: float


@dataclass(frozen=True)
class Series:
    metric: str
    unit: str
    gpu: int | None
    source: str
    node_id: str
    points: list[Bucket]


def series_of(session: Session, resource_type: str, resource_id: str, *, start: datetime,
              end: datetime, step: timedelta,
              metrics: Iterable[str] | None = None) -> list[Series]:
    """Every series of one resource over [start, end), folded into windows of ``step`` (a
    multiple of the resolution) aligned on ``start``; windows without data are left out."""
    if step < RESOLUTION or step.total_seconds() % RESOLUTION.total_seconds():
        raise ValidationFailed(f"step must be a multiple of {int(RESOLUTION.total_seconds())}s",
                               field="step")
    stmt = select(SeriesModel).where(SeriesModel.resource_type == resource_type,
                                     SeriesModel.resource_id == resource_id)
    if metrics is not None:
        stmt = stmt.where(SeriesModel.metric.in_(list(metrics)))
    series = list(session.scalars(stmt.order_by(SeriesModel.metric, SeriesModel.gpu)))
    if not series:
        return []
    folds: dict[int, dict[int, list[float]]] = {s.id: {} for s in series}
    width = step.total_seconds()
    for row in session.execute(select(
            PointModel.series_id, PointModel.bucket_at, PointModel.count, PointModel.sum,
            PointModel.min, PointModel.max).where(
            PointModel.series_id.in_(list(folds)), PointModel.bucket_at >= _bucket(start),
            PointModel.bucket_at < end).order_by(PointModel.series_id, PointModel.bucket_at)):
        if row.bucket_at < start:
            continue
        window = int((row.bucket_at - start).total_seconds() // width)
        fold = folds[row.series_id].setdefault(window, [0, 0.0, row.min, row.max])
        fold[0] += row.count
        fold[1] += row.sum
        fold[2] = min(fold[2], row.min)
        fold[3] = max(fold[3], row.max)
    return [Series(metric=s.metric, unit=METRICS[s.metric][0],
                   gpu=None if s.gpu == NOT_A_GPU else s.gpu, source=s.source,
                   node_id=s.node_id,
                   points=[Bucket(start + w * step, int(f[0]), f[1] / f[0], f[2], f[3])
                           for w, f in sorted(folds[s.id].items())])
            for s in series]


@dataclass(frozen=True)
class GpuGauge:
    metric: str
    node_id: str
    gpu: int
    scope_path: str
    source: str
    value: float


def current_gpu_values(session: Session, *, now: datetime,
                       fresh: timedelta) -> list[GpuGauge]:
    """The latest value of every GPU metric reported within ``fresh``: one per physical
    GPU (node, index) and metric, from whichever resource held the GPU last."""
    rows = session.scalars(select(SeriesModel).where(
        SeriesModel.last_at >= now - fresh, SeriesModel.gpu != NOT_A_GPU)
        .order_by(SeriesModel.last_at))
    latest: dict[tuple[str, int, str], GpuGauge] = {}
    for s in rows:  # oldest first: a newer holder of the same GPU replaces an older one
        latest[(s.node_id, s.gpu, s.metric)] = GpuGauge(s.metric, s.node_id, s.gpu,
                                                        s.scope_path, s.source, s.last_value)
    return [latest[k] for k in sorted(latest)]
