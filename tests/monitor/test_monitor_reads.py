"""A tick reads each model's inference log once: drift, quality and performance share the current window."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta, timezone

import numpy as np
import pandas as pd
import pytest

from knowledge import registry
from knowledge.database import session_scope
from mape.config import FeaturesConfig, FileSourceConfig, ModelConfig, SqlSourceConfig, TrainingConfig
from mape.data import FileSource, TableSource
from mape.monitor import Monitor

T0 = datetime(2026, 1, 5, tzinfo=timezone.utc)
AT = T0 + timedelta(hours=3)


class CountingFileSource(FileSource):
    reads: list[tuple[datetime, datetime, tuple[str, ...]]]

    def read(self, start: datetime, end: datetime, columns: Sequence[str] | None = None) -> pd.DataFrame:
        self.reads.append((start, end, tuple(columns or ())))
        return super().read(start, end, columns)


class Factory:
    def __init__(self) -> None:
        self.sources: dict[str, CountingFileSource] = {}

    def __call__(self, cfg: FileSourceConfig | SqlSourceConfig) -> TableSource:
        assert isinstance(cfg, FileSourceConfig)
        source = CountingFileSource(cfg.path, kind=cfg.kind)
        source.reads = []
        self.sources["labels" if "labels" in cfg.path else "inference"] = source
        return source


@pytest.fixture
def log_dir(tmp_path):
    rng = np.random.default_rng(0)
    times = pd.date_range(T0, AT, freq="20s", inclusive="left")
    n = len(times)
    label = rng.integers(0, 2, size=n)
    pd.DataFrame({"id": np.arange(n), "timestamp": times, "x1": rng.normal(size=n), "p": rng.uniform(size=n),
                  "prediction": np.where(rng.uniform(size=n) < 0.8, label, 1 - label), "model_version": 1,
                  }).to_parquet(tmp_path / "inference.parquet")
    pd.DataFrame({"id": np.arange(n), "timestamp": times + timedelta(minutes=5), "label": label}).to_parquet(
        tmp_path / "labels.parquet")
    return tmp_path


def config(path, performance_window: str) -> ModelConfig:
    return ModelConfig(
        name="churn", features=FeaturesConfig(numeric=["x1"]), score_column="p",
        inference=FileSourceConfig(kind="parquet", path=str(path / "inference.parquet")),
        labels_source=FileSourceConfig(kind="parquet", path=str(path / "labels.parquet")),
        training=TrainingConfig(entrypoint="examples.churn:train"),
        drift={"window": "1h", "min_samples": 50}, performance={"window": performance_window, "min_samples": 50},
    )


def run_twice(engine, cfg: ModelConfig, factory: Factory):
    with session_scope(engine) as session:
        model = registry.upsert_model(session, name="churn", training_entrypoint="examples.churn:train")
        version = registry.register_version(session, model_id=model.id, artifact_uri="file:///churn/1",
                                            metrics={"accuracy": 0.8}, training_window=(T0, T0 + timedelta(hours=1)))
        registry.promote(session, version, actor="test", at=T0)
        monitor = Monitor([cfg], source_factory=factory)
        monitor.run(session, {"churn": model.id}, AT - timedelta(minutes=1))  # fits on the reference
        factory.sources["inference"].reads.clear()
        return monitor.run(session, {"churn": model.id}, AT)


@pytest.mark.parametrize("window", ["1h", "30m"])
def test_a_performance_window_within_the_drift_window_is_served_from_the_current_window(engine, log_dir, window):
    factory = Factory()

    report = run_twice(engine, config(log_dir, window), factory)

    assert factory.sources["inference"].reads == [(AT - timedelta(hours=1), AT, ())]
    summary = report.model("churn")
    assert summary.performance is not None and summary.performance.n_labelled > 50
    assert summary.performance.n_estimated == {"1h": 180, "30m": 90}[window]
    assert report.errors == ()


def test_a_longer_performance_window_reads_its_own_columns(engine, log_dir):
    factory = Factory()

    report = run_twice(engine, config(log_dir, "2h"), factory)

    reads = factory.sources["inference"].reads
    assert reads[0] == (AT - timedelta(hours=1), AT, ())  # the current window, every column
    assert {r[:2] for r in reads[1:]} == {(AT - timedelta(hours=2), AT)}
    assert all(r[2] for r in reads[1:])  # the performance sensor's columns only
    assert report.model("churn").performance.n_estimated == 360
