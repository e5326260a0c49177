"""The Monitor checks quality before drift, drift tests the features that are there, a failing sensor falls back."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime, timedelta

import pandas as pd
import pytest
from sqlmodel import col, select

from knowledge.database import session_scope
from knowledge.tables import Observation
from mape.config import FileSourceConfig, SqlSourceConfig
from mape.data import FileSource, TableSource
from mape.errors import DataSourceError
from mape.monitor import Monitor
from tests.monitor.test_monitor_stage_observations import LABEL_DELAY, T0, inference_log, model_config, register

DROPPED_AT = T0 + timedelta(hours=9)  # upstream stops sending x2
AT = T0 + timedelta(hours=11)


def rows_at(session, at: datetime, model_id: int) -> list[Observation]:
    return list(session.exec(select(Observation).where(Observation.time == at, Observation.model_id == model_id)
                             .order_by(col(Observation.id))))


def write_world(path, *, drop_x2_from_newer_files: bool) -> None:
    log = inference_log(T0, T0 + timedelta(hours=12))
    (path / "log").mkdir()
    older, newer = log[log.timestamp < DROPPED_AT], log[log.timestamp >= DROPPED_AT]
    older.drop(columns="label").to_parquet(path / "log" / "part-0.parquet")
    newer.drop(columns=["label", "x2"] if drop_x2_from_newer_files else ["label"]).to_parquet(
        path / "log" / "part-1.parquet")
    labels = log[["id", "timestamp", "label"]].assign(timestamp=log["timestamp"] + LABEL_DELAY)
    labels.to_csv(path / "labels.csv", index=False)


class WithoutX2(FileSource):
    """A source whose table lost x2 after the reference was read: asking for it fails, as with a real source."""

    def read(self, start: datetime, end: datetime, columns: Sequence[str] | None = None) -> pd.DataFrame:
        if end <= DROPPED_AT:
            return super().read(start, end, columns)
        if columns is not None and "x2" in columns:
            raise DataSourceError(f"{self.name} has no column 'x2'")
        return super().read(start, end, columns).drop(columns="x2", errors="ignore")


class Flaky(FileSource):
    """The real source; while ``broken`` is set, every read fails as an unreachable disk would."""

    broken = False

    def read(self, start: datetime, end: datetime, columns: Sequence[str] | None = None) -> pd.DataFrame:
        if Flaky.broken:
            raise DataSourceError(f"{self.name} cannot be read: disk gone")
        return super().read(start, end, columns)


def factory_of(kind: type[FileSource]):
    def factory(cfg: FileSourceConfig | SqlSourceConfig) -> TableSource:
        assert isinstance(cfg, FileSourceConfig)
        source_type = kind if cfg.kind == "parquet" else FileSource  # only the inference log misbehaves
        return source_type(cfg.path, kind=cfg.kind, timestamp_column=cfg.timestamp_column, id_column=cfg.id_column)
    return factory


@pytest.mark.parametrize("how", ["absent from the table", "null in the newer Parquet files"])
def test_a_missing_feature_is_a_quality_finding_and_drift_tests_the_others(engine, tmp_path, how):
    write_world(tmp_path, drop_x2_from_newer_files=how.startswith("null"))
    factory = factory_of(WithoutX2 if how.startswith("absent") else FileSource)
    monitor = Monitor([model_config("churn", str(tmp_path / "log"), str(tmp_path / "labels.csv"))],
                      source_factory=factory)
    with session_scope(engine) as session:
        model_id = register(session, "churn")
        report = monitor.run(session, {"churn": model_id}, AT)
    with session_scope(engine) as session:
        rows = rows_at(session, AT, model_id)

    assert report.errors == ()
    quality = {o.metric: o.value for o in rows if o.sensor == "quality" and not o.labels}
    assert quality["quality.missing_columns"] == quality["quality.schema_changes"] == 1
    # x1's one-sigma shift puts values past the reference's range too: out of range, and drift, not a schema change
    assert quality["quality.out_of_range_spikes"] == 1 and quality["quality.issues"] == 2
    assert [(o.metric, o.labels) for o in rows if o.sensor == "quality" and o.labels.get("column") == "x2"] == [
        ("quality.column.missing", {"column": "x2"})]
    # drift tests x1 (shifted at hour 8) and c1; x2 is nowhere in its rows
    drift = report.model("churn").drift
    assert [f.feature for f in drift.features] == ["x1", "c1"] and drift.detected is True
    assert {o.labels["feature"] for o in rows if o.metric.startswith("drift.feature.")} == {"x1", "c1"}
    assert {o.metric: o.value for o in rows if o.sensor == "drift" and not o.labels}["drift.n_features"] == 2
    if how.startswith("absent"):
        assert drift.missing_features == ("x2",) and "not tested, missing: x2" in str(report)
    assert report.model("churn").quality.missing_columns == ("x2",)


def test_the_same_windows_serve_quality_and_drift_and_a_clean_window_has_no_finding(engine, tmp_path):
    write_world(tmp_path, drop_x2_from_newer_files=False)
    monitor = Monitor([model_config("churn", str(tmp_path / "log"), str(tmp_path / "labels.csv"))])
    at = T0 + timedelta(hours=7)  # before x1 shifts
    with session_scope(engine) as session:
        model_id = register(session, "churn")
        summary = monitor.run(session, {"churn": model_id}, at).model("churn")

    assert summary.quality.n_reference == summary.drift.n_reference == 6 * 180
    assert summary.quality.n_current == summary.drift.n_current == 180
    assert summary.quality.issues == () and summary.as_dict()["quality_issues"] == 0


def test_a_disabled_quality_check_writes_no_quality_rows(engine, tmp_path):
    write_world(tmp_path, drop_x2_from_newer_files=False)
    cfg = model_config("churn", str(tmp_path / "log"), str(tmp_path / "labels.csv"))
    cfg = cfg.model_copy(update={"quality": cfg.quality.model_copy(update={"enabled": False})})
    with session_scope(engine) as session:
        model_id = register(session, "churn")
        report = Monitor([cfg]).run(session, {"churn": model_id}, AT)
        assert not [o for o in rows_at(session, AT, model_id) if o.sensor == "quality"]
    assert report.model("churn").quality is None


def test_a_failing_source_falls_back_to_the_last_good_values_within_fallback_for(engine, tmp_path, caplog):
    write_world(tmp_path, drop_x2_from_newer_files=False)
    monitor = Monitor([model_config("churn", str(tmp_path / "log"), str(tmp_path / "labels.csv"))],
                      source_factory=factory_of(Flaky))  # fallback_for: the default 15 minutes
    good, minute = T0 + timedelta(hours=10), timedelta(minutes=1)
    Flaky.broken = False
    try:
        with session_scope(engine) as session:
            model_id = register(session, "churn")
            monitor.run(session, {"churn": model_id}, good)
            Flaky.broken = True
            with caplog.at_level(logging.ERROR, logger="mape.monitor.stage"):
                within = [monitor.run(session, {"churn": model_id}, good + m * minute) for m in (5, 10)]
                logged = [r.getMessage() for r in caplog.records]
            past = monitor.run(session, {"churn": model_id}, good + 15 * minute)
            Flaky.broken = False
            repaired = monitor.run(session, {"churn": model_id}, good + 20 * minute)
    finally:
        Flaky.broken = False

    with session_scope(engine) as session:
        before = {(o.sensor, o.metric): o.value for o in rows_at(session, good, model_id) if not o.labels}
        for report in within:
            again = rows_at(session, report.at, model_id)
            assert all(o.labels == {} for o in again)  # summaries only: no per-feature or per-column rows
            assert {(o.sensor, o.metric): o.value for o in again} == before
        assert rows_at(session, past.at, model_id) == []
        assert len(rows_at(session, repaired.at, model_id)) == 30 + 27

    assert {o[0] for o in before} == {"quality", "drift", "performance"}
    for report in within:
        assert [(e.sensor, e.message.split(": ")[0]) for e in report.errors] == [
            ("quality", "Quality sensor for model churn failed"), ("drift", "Drift sensor for model churn failed"),
            ("performance", "Performance sensor for model churn failed")]
        assert all(e.message.endswith("disk gone; falling back to the value of 2026-01-05T10:00:00+00:00")
                   for e in report.errors)
        assert report.n_observations == len(before)
    assert len(logged) == 6 and all("\n" not in m and "falling back to the value of " in m for m in logged)
    assert len(past.errors) == 3 and not [e for e in past.errors if "falling back" in str(e)]
    assert repaired.errors == ()


def test_no_fallback_when_fallback_for_is_zero(engine, tmp_path):
    write_world(tmp_path, drop_x2_from_newer_files=False)
    cfg = model_config("churn", str(tmp_path / "log"), str(tmp_path / "labels.csv")).model_copy(
        update={"fallback_for": timedelta(0)})
    monitor = Monitor([cfg], source_factory=factory_of(Flaky))
    Flaky.broken = False
    try:
        with session_scope(engine) as session:
            model_id = register(session, "churn")
            monitor.run(session, {"churn": model_id}, AT)
            Flaky.broken = True
            report = monitor.run(session, {"churn": model_id}, AT + timedelta(minutes=5))
            assert rows_at(session, report.at, model_id) == []
    finally:
        Flaky.broken = False
    assert len(report.errors) == 3 and report.n_observations == 0
