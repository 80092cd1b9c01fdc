"""The metrics store: attribution, validation, downsampling on write, retention, reading."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import func, select

from aicloud.platform import metrics
from aicloud.platform.metrics.models import PointModel, SeriesModel
from aicloud.shared.db import Database

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
OWNERS = {"inst_a": metrics.Owner("instance", "/org_1/dep_1/prj_1")}


def gpu(index: int, util: float, source: str = "simulated") -> dict[str, object]:
    return {"index": index, "uuid": f"GPU-{index}", "source": source,
            "utilization_pct": util, "memory_used_bytes": 2**30,
            "memory_total_bytes": 80 * 2**30, "power_watts": 70 + 6 * util,
            "temperature_c": 40.0}


def sample(at: datetime, util: float, rid: str | None = "inst_a",
           cores: float | None = 0.5) -> dict[str, object]:
    return {"resource_id": rid, "at": at.isoformat(), "cpu_cores": cores,
            "memory_bytes": 10**8 if rid else None, "processes": 2, "gpus": [gpu(0, util)]}


def record(db: Database, samples: list[dict[str, object]], now: datetime,
           node: str = "node_1") -> metrics.RecordResult:
    with db.transaction() as s:
        return metrics.record_samples(s, node, samples, owners=OWNERS, now=now)


def test_samples_fold_into_minute_buckets_and_read_back(db: Database) -> None:
    # A node reporting every 10 s for 10 minutes: 60 samples, 10 buckets per series.
    for i in range(60):
        at = T0 + timedelta(seconds=10 * i)
        assert record(db, [sample(at, util=float(i % 6) * 10)], at).dropped == 0
    with db.transaction() as s:
        util = s.scalar(select(SeriesModel).where(SeriesModel.metric == "gpu_utilization_pct"))
        assert util is not None and (util.node_id, util.gpu, util.source) == (
            "node_1", 0, "simulated")
        assert util.last_value == 50.0 and util.scope_path == "/org_1/dep_1/prj_1"
        assert s.scalar(select(func.count()).select_from(PointModel).where(
            PointModel.series_id == util.id)) == 10
        series = metrics.series_of(s, "instance", "inst_a", start=T0,
                                   end=T0 + timedelta(minutes=10),
                                   step=timedelta(minutes=5))
    by = {(x.metric, x.gpu): x for x in series}
    assert set(by) == {("cpu_cores", None), ("memory_bytes", None),
                       ("gpu_utilization_pct", 0), ("gpu_memory_used_bytes", 0),
                       ("gpu_power_watts", 0), ("gpu_temperature_c", 0)}
    pts = by[("gpu_utilization_pct", 0)].points
    assert [(p.at, p.count, p.min, p.max, p.avg) for p in pts] == [
        (T0, 30, 0.0, 50.0, 25.0), (T0 + timedelta(minutes=5), 30, 0.0, 50.0, 25.0)]
    assert by[("cpu_cores", None)].unit == "cores"


def test_a_node_writes_only_what_it_runs_and_only_sane_values(db: Database) -> None:
    bad = [
        sample(T0, 10, rid="inst_of_another_node"),  # not placed on this node
        sample(T0 + timedelta(hours=2), 10),  # from the future
        sample(T0 - timedelta(hours=2), 10),  # older than a buffered report may be
        {**sample(T0, 10), "cpu_cores": float("nan")},
        {**sample(T0, 10), "gpus": [{**gpu(0, 10), "utilization_pct": 250}]},
        {**sample(T0, 10), "gpus": [{**gpu(0, 10), "source": "made-up"}]},
    ]
    result = record(db, bad, T0)
    assert result.dropped == 6 and result.problems
    # What was valid in the partly bad samples is kept: CPU, memory and the other GPU fields.
    with db.transaction() as s:
        counts = dict(s.execute(select(SeriesModel.metric, PointModel.count).join(
            PointModel, PointModel.series_id == SeriesModel.id)).all())
        owners = set(s.scalars(select(SeriesModel.resource_id)))
    assert owners == {"inst_a"}
    # Of the 3 samples in the window: cpu from 2 (one NaN), memory from 3; the reading with
    # a made-up source is dropped whole, the one at 250 % loses its utilization only.
    assert counts == {"cpu_cores": 2, "memory_bytes": 3, "gpu_utilization_pct": 1,
                      "gpu_memory_used_bytes": 2, "gpu_power_watts": 2,
                      "gpu_temperature_c": 2}
    # The node's free GPUs are its own series; project and org are the platform's.
    record(db, [sample(T0, 3.0, rid=None, cores=None)], T0)
    with db.transaction() as s:
        node = s.scalar(select(SeriesModel).where(SeriesModel.resource_type == "node",
                                                  SeriesModel.metric == "gpu_utilization_pct"))
    assert node is not None and (node.resource_id, node.scope_path) == ("node_1", "/")


def test_a_late_report_never_moves_the_latest_value_back(db: Database) -> None:
    record(db, [sample(T0 + timedelta(seconds=30), 90)], T0 + timedelta(seconds=30))
    record(db, [sample(T0, 10)], T0 + timedelta(seconds=40))  # buffered, sent late
    with db.transaction() as s:
        util = s.scalar(select(SeriesModel).where(SeriesModel.metric == "gpu_utilization_pct"))
        assert util is not None and util.last_value == 90
        point = s.scalar(select(PointModel).where(PointModel.series_id == util.id))
        assert point is not None and (point.count, point.min, point.max) == (2, 10, 90)


def test_retention_deletes_old_buckets_and_silent_series(db: Database) -> None:
    record(db, [sample(T0, 10)], T0)
    later = T0 + timedelta(days=8)
    record(db, [sample(later, 20, rid=None, cores=None)], later)
    with db.transaction() as s:
        deleted = metrics.prune(s, now=later, retention=timedelta(days=7))
    assert deleted == 6  # the instance's six series, one bucket each
    with db.transaction() as s:
        left = {(m.resource_type, m.metric) for m in s.scalars(select(SeriesModel))}
        assert left == {("node", m) for m in metrics.GPU_METRICS}
        assert s.scalar(select(func.count()).select_from(PointModel)) == 4
        gauges = metrics.current_gpu_values(s, now=later, fresh=timedelta(minutes=2))
    assert [(g.metric, g.node_id, g.gpu, g.value) for g in gauges][:1] == [
        ("gpu_memory_used_bytes", "node_1", 0, 2**30)]
