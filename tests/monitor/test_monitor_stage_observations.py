"""The Monitor stage writes the contracted observations, fits each production reference once, survives broken models."""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from datetime import datetime, timedelta, timezone

import numpy as np
import pandas as pd
import pytest
from sqlmodel import col, select

from knowledge import registry
from knowledge.database import session_scope
from knowledge.tables import Observation
from mape.config import FeaturesConfig, FileSourceConfig, ModelConfig, SqlSourceConfig, TrainingConfig
from mape.data import FileSource, TableSource, open_source
from mape.monitor import Monitor

T0 = datetime(2026, 1, 5, tzinfo=timezone.utc)
STEP = timedelta(seconds=20)  # one prediction every 20 s: 180 an hour
LABEL_DELAY = timedelta(minutes=30)
TRAINING = (T0, T0 + timedelta(hours=6))
DRIFT_STARTS = T0 + timedelta(hours=8)
QUALITY_SUMMARY = ("schema_changes", "missing_columns", "new_columns", "retyped_columns", "null_spikes",
                   "out_of_range_spikes", "unseen_category_columns", "max_null_rate_increase", "max_out_of_range_share",
                   "max_unseen_category_share", "issues", "n_current")


def inference_log(start: datetime, end: datetime, seed: int = 0) -> pd.DataFrame:
    """Predictions with two numeric and one categorical feature; x1 shifts by one sigma after DRIFT_STARTS."""
    rng = np.random.default_rng(seed)
    times = pd.date_range(start, end, freq=STEP, inclusive="left")
    n = len(times)
    x1 = rng.normal(size=n) + np.where(times >= DRIFT_STARTS, 1.0, 0.0)
    label = rng.integers(0, 2, size=n)
    return pd.DataFrame({
        "id": np.arange(n),
        "timestamp": times,
        "x1": x1,
        "x2": rng.normal(size=n),
        "c1": rng.choice(["a", "b", "c"], size=n),
        "prediction": np.where(rng.uniform(size=n) < 0.8, label, 1 - label),
        "label": label,
        "model_version": 1,
    })


@pytest.fixture
def world(tmp_path):
    """Files of model 'churn': a Parquet inference log (split over two files) and a CSV of delayed labels."""
    log = inference_log(T0, T0 + timedelta(hours=12))
    (tmp_path / "log").mkdir()
    half = len(log) // 2
    log.iloc[:half].drop(columns="label").to_parquet(tmp_path / "log" / "part-0.parquet")
    log.iloc[half:].drop(columns="label").to_parquet(tmp_path / "log" / "part-1.parquet")
    labels = log[["id", "timestamp", "label"]].assign(timestamp=log["timestamp"] + LABEL_DELAY)
    labels.to_csv(tmp_path / "labels.csv", index=False)
    return tmp_path, log


def model_config(name: str, inference_path: str, labels_path: str) -> ModelConfig:
    return ModelConfig(
        name=name,
        features=FeaturesConfig(numeric=["x1", "x2"], categorical=["c1"]),
        inference=FileSourceConfig(kind="parquet", path=inference_path),
        labels_source=FileSourceConfig(kind="csv", path=labels_path),
        training=TrainingConfig(entrypoint="examples.churn:train"),
        drift={"window": "1h", "alpha": 0.05, "min_samples": 100},
        performance={"window": "2h", "min_samples": 50},
    )


def register(session, name: str, *, training: tuple[datetime, datetime] = TRAINING, accuracy: float | None = 0.9,
             promote: bool = True) -> int:
    model = registry.upsert_model(session, name=name, training_entrypoint="examples.churn:train")
    version = registry.register_version(session, model_id=model.id, artifact_uri=f"file:///{name}/1",
                                        metrics={} if accuracy is None else {"accuracy": accuracy},
                                        training_window=training)
    if promote:
        registry.promote(session, version, actor="test", at=T0)
    return model.id


class CountingFileSource(FileSource):
    """The real FileSource, remembering every window it was asked for."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.windows: list[tuple[datetime, datetime, tuple[str, ...]]] = []

    def read(self, start: datetime, end: datetime, columns: Sequence[str] | None = None) -> pd.DataFrame:
        self.windows.append((start, end, tuple(columns or ())))
        return super().read(start, end, columns)


class CountingFactory:
    def __init__(self) -> None:
        self.sources: list[CountingFileSource] = []

    def __call__(self, cfg: FileSourceConfig | SqlSourceConfig) -> TableSource:
        assert isinstance(cfg, FileSourceConfig)
        source = CountingFileSource(cfg.path, kind=cfg.kind, timestamp_column=cfg.timestamp_column,
                                    id_column=cfg.id_column)
        self.sources.append(source)
        return source

    def reads_of(self, window: tuple[datetime, datetime]) -> int:
        return sum(1 for s in self.sources for w in s.windows if (w[0], w[1]) == window)


def rows_at(session, at: datetime, model_id: int) -> list[Observation]:
    return list(session.exec(select(Observation).where(Observation.time == at, Observation.model_id == model_id)
                             .order_by(col(Observation.id))))


def test_one_tick_writes_exactly_the_contracted_rows(engine, world):
    path, log = world
    at = T0 + timedelta(hours=10)
    with session_scope(engine) as session:
        model_id = register(session, "churn")
        monitor = Monitor([model_config("churn", str(path / "log"), str(path / "labels.csv"))])
        report = monitor.run(session, {"churn": model_id}, at)

    with session_scope(engine) as session:
        rows = rows_at(session, at, model_id)
    got = {(o.sensor, o.metric, tuple(sorted(o.labels.items()))): o.value for o in rows}
    features = [("x1", "ks"), ("x2", "ks"), ("c1", "chi2")]
    expected_keys = {("drift", f"drift.{m}", ()) for m in (
        "share_drifted", "n_drifted", "n_features", "min_q_value", "detected", "max_effect_size", "n_reference",
        "n_current", "reference_version")}
    expected_keys |= {("drift", f"drift.feature.{m}", (("feature", f), ("test", t)))
                      for f, t in features for m in ("statistic", "p_value", "q_value", "drifted")}
    effects = {"x1": "wasserstein", "x2": "wasserstein", "c1": "js"}
    expected_keys |= {("drift", "drift.feature.effect_size", (("effect", effects[f]), ("feature", f), ("test", t)))
                      for f, t in features}
    expected_keys |= {("performance", f"performance.{m}", ())
                      for m in ("accuracy", "precision", "recall", "f1", "accuracy_drop", "n_labelled")}
    expected_keys |= {("quality", f"quality.{m}", ()) for m in QUALITY_SUMMARY}
    expected_keys |= {("quality", f"quality.column.{m}", (("column", f),)) for f in ("x1", "x2", "c1")
                      for m in ("null_rate", "null_rate_increase", "null_spike")}
    expected_keys |= {("quality", f"quality.column.{m}", (("column", f),)) for f in ("x1", "x2")
                      for m in ("out_of_range_share", "out_of_range_spike")}
    expected_keys |= {("quality", f"quality.column.{m}", (("column", "c1"),))
                      for m in ("unseen_category_share", "unseen_categories")}
    assert len(rows) == len(got) == len(expected_keys) == 30 + 27
    assert set(got) == expected_keys
    assert all(o.time == at for o in rows)

    # drift: x1 moved one sigma at hour 8; the reference is the 6 h training window.
    assert got[("drift", "drift.n_reference", ())] == 6 * 180
    assert got[("drift", "drift.n_current", ())] == 180
    assert got[("drift", "drift.reference_version", ())] == 1  # the first stored reference: the training window
    assert got[("drift", "drift.detected", ())] == 1.0
    assert got[("drift", "drift.feature.drifted", (("feature", "x1"), ("test", "ks")))] == 1.0
    # one sigma moved: the Wasserstein effect size is about 1 reference standard deviation, far above the 0.1 floor
    x1_effect = got[("drift", "drift.feature.effect_size", (("effect", "wasserstein"), ("feature", "x1"), ("test", "ks")))]
    assert 0.7 < x1_effect < 1.3
    assert report.model("churn").drift.max_effect_size == pytest.approx(x1_effect)
    assert got[("drift", "drift.n_features", ())] == 3
    assert got[("drift", "drift.share_drifted", ())] == got[("drift", "drift.n_drifted", ())] / 3

    # performance: predictions of [at - 2h, at) whose label (30 min late) arrived by `at`.
    scored = log[(log.timestamp >= at - timedelta(hours=2)) & (log.timestamp + LABEL_DELAY <= at)]
    accuracy = float((scored.prediction == scored.label).mean())
    assert got[("performance", "performance.n_labelled", ())] == len(scored) == 271  # 8:00 to 9:30 inclusive
    assert got[("performance", "performance.accuracy", ())] == pytest.approx(accuracy)
    assert got[("performance", "performance.accuracy_drop", ())] == pytest.approx(0.9 - accuracy)

    summary = report.model("churn")
    assert summary.version == 1 and summary.detected is True and summary.n_labelled == 271
    assert summary.accuracy == pytest.approx(accuracy)
    assert got[("quality", "quality.schema_changes", ())] == 0 and got[("quality", "quality.n_current", ())] == 180
    assert report.errors == () and report.n_observations == 30 + 27
    assert "model churn (version 1)" in str(report)
    as_dict = json.loads(json.dumps(report.as_dict()))
    assert as_dict["models"]["churn"]["detected"] is True
    assert as_dict["models"]["churn"]["n_labelled"] == 271
    assert as_dict["errors"] == []


def test_the_reference_is_read_once_per_production_version(engine, world):
    path, _ = world
    factory = CountingFactory()
    monitor = Monitor([model_config("churn", str(path / "log"), str(path / "labels.csv"))], source_factory=factory)
    ticks = [T0 + timedelta(hours=h) for h in (10, 11, 12)]
    with session_scope(engine) as session:
        model_id = register(session, "churn")
        first = monitor.run(session, {"churn": model_id}, ticks[0])
        second = monitor.run(session, {"churn": model_id}, ticks[1])

        assert factory.reads_of(TRAINING) == 1
        assert len(factory.sources) == 2  # one inference and one labels source, kept across ticks
        assert first.model("churn").drift.n_reference == second.model("churn").drift.n_reference == 1080

        # a new production version brings its own reference: its training window was [6h, 9h)
        v2_window = (T0 + timedelta(hours=6), T0 + timedelta(hours=9))
        v2 = registry.register_version(session, model_id=model_id, artifact_uri="file:///churn/2",
                                       training_window=v2_window)
        registry.promote(session, v2, actor="test", at=ticks[1])
        third = monitor.run(session, {"churn": model_id}, ticks[2])

    assert factory.reads_of(v2_window) == 1
    assert factory.reads_of(TRAINING) == 1
    assert third.model("churn").version == 2
    assert third.model("churn").drift.n_reference == 3 * 180
    # the log has no row served by version 2 yet, so nothing is scored for it
    assert third.model("churn").performance.n_labelled == 0
    with session_scope(engine) as session:
        perf = {o.metric: o.value for o in rows_at(session, ticks[2], model_id) if o.sensor == "performance"}
    assert perf == {"performance.accuracy": None, "performance.precision": None, "performance.recall": None,
                    "performance.f1": None, "performance.accuracy_drop": None, "performance.n_labelled": 0.0}


def test_a_reference_too_small_to_test_is_read_again_next_tick(engine, world):
    path, _ = world
    factory = CountingFactory()
    monitor = Monitor([model_config("churn", str(path / "log"), str(path / "labels.csv"))], source_factory=factory)
    tiny = (T0, T0 + timedelta(minutes=10))  # 30 rows, fewer than drift.min_samples
    with session_scope(engine) as session:
        model_id = register(session, "churn", training=tiny)
        for hours in (10, 11):
            report = monitor.run(session, {"churn": model_id}, T0 + timedelta(hours=hours))
            assert report.model("churn").drift.detected is None

    assert factory.reads_of(tiny) == 2


def test_a_broken_source_or_missing_production_version_does_not_stop_the_others(engine, world, caplog):
    path, _ = world
    models = [
        model_config("broken", str(path / "no-such-dir"), str(path / "labels.csv")),
        model_config("unpromoted", str(path / "log"), str(path / "labels.csv")),
        model_config("churn", str(path / "log"), str(path / "labels.csv")),
    ]
    at = T0 + timedelta(hours=10)
    with session_scope(engine) as session:
        ids = {name: register(session, name, promote=name != "unpromoted") for name in ("broken", "unpromoted", "churn")}
        with caplog.at_level(logging.ERROR, logger="mape.monitor.stage"):
            report = Monitor(models).run(session, ids, at)

    assert {(e.model, e.sensor) for e in report.errors} == {
        ("broken", "quality"), ("broken", "drift"), ("broken", "performance"), ("unpromoted", "model")}
    messages = [r.getMessage() for r in caplog.records]
    assert any(m.startswith("Drift sensor for model broken failed: parquet source ") and "does not exist" in m
               for m in messages)
    assert "Model unpromoted has no production version; it is not monitored." in messages
    with session_scope(engine) as session:
        assert rows_at(session, at, ids["broken"]) == []
        assert rows_at(session, at, ids["unpromoted"]) == []
        assert len(rows_at(session, at, ids["churn"])) == 30 + 27
    assert report.model("churn").detected is True
    assert report.as_dict()["errors"][1].startswith("Drift sensor for model broken failed: ")


def test_windows_without_enough_rows_write_no_data_values(engine, world):
    path, _ = world
    at = T0 + timedelta(hours=20)  # the log ends at hour 12
    with session_scope(engine) as session:
        model_id = register(session, "churn", accuracy=None)
        report = Monitor([model_config("churn", str(path / "log"), str(path / "labels.csv"))]).run(
            session, {"churn": model_id}, at)
        got = {o.metric: o.value for o in rows_at(session, at, model_id)}

    assert got == {
        "drift.share_drifted": None, "drift.n_drifted": None, "drift.n_features": None, "drift.min_q_value": None,
        "drift.detected": None, "drift.max_effect_size": None, "drift.n_reference": 1080.0, "drift.n_current": 0.0,
        "drift.reference_version": 1.0,
        "performance.accuracy": None, "performance.precision": None, "performance.recall": None,
        "performance.f1": None, "performance.accuracy_drop": None, "performance.n_labelled": 0.0,
        **{f"quality.{m}": None for m in QUALITY_SUMMARY}, "quality.n_current": 0.0,
    }
    assert report.model("churn").drift.reason.startswith("insufficient data")


def test_regression_models_get_mae_and_rmse(engine, tmp_path):
    rng = np.random.default_rng(9)
    times = pd.date_range(T0, T0 + timedelta(hours=4), freq=STEP, inclusive="left")
    label = rng.normal(size=len(times))
    log = pd.DataFrame({"id": range(len(times)), "timestamp": times, "x1": rng.normal(size=len(times)),
                        "prediction": label + 0.5})
    log.to_parquet(tmp_path / "log.parquet")
    log[["id", "timestamp"]].assign(label=label).to_csv(tmp_path / "labels.csv", index=False)
    cfg = model_config("price", str(tmp_path / "log.parquet"), str(tmp_path / "labels.csv")).model_copy(
        update={"task": "regression", "version_column": None, "features": FeaturesConfig(numeric=["x1"])})
    at = T0 + timedelta(hours=4)
    with session_scope(engine) as session:
        model_id = register(session, "price", training=(T0, T0 + timedelta(hours=2)))
        Monitor([cfg], source_factory=open_source).run(session, {"price": model_id}, at)
        got = {o.metric: o.value for o in rows_at(session, at, model_id) if o.sensor == "performance"}

    assert got == {"performance.mae": pytest.approx(0.5), "performance.rmse": pytest.approx(0.5),
                   "performance.n_labelled": 360.0}
