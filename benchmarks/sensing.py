"""A tick's sensing for a fleet: 100 models, 20 features, 5,000-row windows (issue 4: under 10 s, overhead under 20 %).

Each model has its own Parquet inference log and labels, each a directory of
files as a logging job writes them: the training hour (the production
version's drift reference, 5,000 rows) in one file, then a part every five
minutes (417 rows). Before each pass the next five minutes arrive, and the
pass is a real :meth:`mape.monitor.Monitor.run` five minutes later: read every
model's current hour, test 20 features for drift with Benjamini-Hochberg and
the effect-size floor, check data quality, join predictions to the labels
that arrived (ten minutes after them), score them, and write the
observations into a SQLite knowledge base (a file, as in the embedded
default). The first pass also reads and fits the 100 references (once per
production version) and is reported apart.

Two monitors run alternately over the same files, each with its own
knowledge base: one with the sources' decoded-file cache (the default,
``cache_mb: 64``: only the new part is decoded each tick) and one without
(``cache_mb: 0``: every file of the window is scanned each tick), the
baseline of the same run.

The statistical kernels (data-quality checks, drift tests and corrections,
performance metrics: ``DataQualitySensor.score``, ``DriftSensor.score`` and
``PerformanceSensor.score``) are timed inside each
pass; the engine's overhead is everything else: reading the sources, joining
labels, building and writing observations, the knowledge base. Medians over
the passes; results in ``benchmarks/results/sensing.json`` with the machine.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sqlalchemy.engine import Engine

from benchmarks.machine import describe, write_results
from knowledge import registry
from knowledge.database import create_engine_for, session_scope
from knowledge.migrate import upgrade
from mape.config import ModelConfig
from mape.monitor import Monitor
from mape.monitor.sensors import DriftSensor, PerformanceSensor
from mape.monitor.sensors.quality import DataQualitySensor

START = datetime(2026, 1, 5, tzinfo=timezone.utc)
FEATURES = [f"x{i:02d}" for i in range(20)]


PART = timedelta(minutes=5)  # the inference log and the labels arrive as one file every five minutes


class _World:
    """Each model's inference log and labels as directories of five-minute Parquet parts, written as they arrive.

    The training hour is one file; the hour after it (the drift window of the
    first pass) is twelve parts, and :meth:`arrive` writes the next five
    minutes of every model before each later pass, as a logging job would.
    Labels of a part arrive ten minutes after its predictions, in their own
    part file. A third of the fleet drifts after the training hour.
    """

    def __init__(self, root: Path, n_models: int, rows: int, passes: int) -> None:
        self.root, self.rows = root, rows
        per_part = rows // 12
        total = 2 * rows + passes * per_part
        step = timedelta(hours=1) / rows
        rng = np.random.default_rng(0)
        self.frames: list[pd.DataFrame] = []
        self.configs: list[ModelConfig] = []
        for m in range(n_models):
            frame = pd.DataFrame(rng.normal(size=(total, len(FEATURES))), columns=FEATURES)
            if m % 3 == 0:
                frame.loc[rows:, FEATURES[:4]] += 0.5
            label = rng.integers(0, 2, size=total)
            frame.insert(0, "timestamp", pd.date_range(START, periods=total, freq=step))
            frame.insert(0, "id", np.arange(total))
            frame["prediction"] = np.where(rng.uniform(size=total) < 0.85, label, 1 - label)
            frame["model_version"] = 1
            frame["label"] = label
            self.frames.append(frame)
            directory = root / f"m{m:03d}"
            (directory / "inference").mkdir(parents=True)
            (directory / "labels").mkdir()
            self._write(m, START, START + timedelta(hours=1), "train")
            self.configs.append(ModelConfig.model_validate({
                "name": f"model-{m:03d}", "features": {"numeric": FEATURES},
                "inference": {"kind": "parquet", "path": str(directory / "inference")},
                "labels_source": {"kind": "parquet", "path": str(directory / "labels")},
                "training": {"entrypoint": "examples.credit.model:train"},
                "drift": {"window": "1h", "min_samples": 100}, "performance": {"window": "1h", "min_samples": 100},
            }))
        self.written = START + timedelta(hours=1)
        self.arrive(START + timedelta(hours=2))

    def arrive(self, until: datetime) -> None:
        """Write every model's five-minute parts up to ``until``."""
        while self.written < until:
            for m in range(len(self.frames)):
                self._write(m, self.written, self.written + PART, f"part-{self.written:%H%M}")
            self.written += PART

    def _write(self, m: int, start: datetime, end: datetime, name: str) -> None:
        frame = self.frames[m]
        rows = frame[(frame["timestamp"] >= start) & (frame["timestamp"] < end)]
        directory = self.root / f"m{m:03d}"
        rows.drop(columns="label").to_parquet(directory / "inference" / f"{name}.parquet", index=False)
        pd.DataFrame({"id": rows["id"], "timestamp": rows["timestamp"] + timedelta(minutes=10),
                      "label": rows["label"]}).to_parquet(directory / "labels" / f"{name}.parquet", index=False)


class _Timer:
    """Wraps methods and sums the time spent in them (the statistical kernels)."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self._originals: list[tuple[type, str, Callable[..., Any]]] = []

    def wrap(self, owner: type, name: str) -> None:
        original = getattr(owner, name)
        timer = self

        def timed(*args: Any, **kwargs: Any) -> Any:
            began = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                timer.seconds += time.perf_counter() - began

        self._originals.append((owner, name, original))
        setattr(owner, name, timed)

    def restore(self) -> None:
        for owner, name, original in self._originals:
            setattr(owner, name, original)


def _knowledge_base(url: str, configs: list[ModelConfig]) -> tuple[Engine, dict[str, int]]:
    upgrade(url)
    engine = create_engine_for(url)
    ids: dict[str, int] = {}
    with session_scope(engine) as session:
        for cfg in configs:
            model = registry.upsert_model(session, name=cfg.name)
            version = registry.register_version(session, model_id=model.id, artifact_uri="file:///x",
                                                metrics={"accuracy": 0.85},
                                                training_window=(START, START + timedelta(hours=1)))
            registry.promote(session, version, actor="bench", at=START + timedelta(hours=1))
            ids[cfg.name] = model.id
    return engine, ids


def _without_cache(cfg: ModelConfig) -> ModelConfig:
    return cfg.model_copy(update={source: getattr(cfg, source).model_copy(update={"cache_mb": 0})
                                  for source in ("inference", "labels_source")})


def measure(n_models: int = 100, rows: int = 5000, passes: int = 5) -> dict[str, Any]:
    """Both monitors, with and without the decoded-file cache, tick by tick over the same arriving files."""
    runs = {"cached": lambda c: c, "uncached": _without_cache}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        began = time.perf_counter()
        world = _World(root / "data", n_models, rows, passes)
        setups = {name: (Monitor([adapt(c) for c in world.configs]),
                         *_knowledge_base(f"sqlite:///{root / name}.db", world.configs))
                  for name, adapt in runs.items()}
        setup_s = time.perf_counter() - began
        timer = _Timer()
        timer.wrap(DriftSensor, "score")
        timer.wrap(PerformanceSensor, "score")
        timer.wrap(DataQualitySensor, "score")
        seen: dict[str, dict[str, Any]] = {name: {"totals": [], "kernels": [], "errors": 0} for name in runs}
        try:
            for k in range(passes + 1):
                at = START + timedelta(hours=2) + k * PART  # five more minutes of log and labels each pass
                world.arrive(at)
                for name, (monitor, engine, ids) in setups.items():  # alternated: the same machine state
                    timer.seconds = 0.0
                    began = time.perf_counter()
                    with session_scope(engine) as session:
                        report = monitor.run(session, ids, at)
                    elapsed = time.perf_counter() - began
                    record = seen[name]
                    record["errors"] += len(report.errors)
                    record["drifting"] = sum(1 for m in report.models if m.detected)
                    if k == 0:  # also reads and fits the 100 references
                        record["first"] = {"total_s": round(elapsed, 3), "kernels_s": round(timer.seconds, 3),
                                           "observations": report.n_observations}
                        continue
                    record["totals"].append(elapsed)
                    record["kernels"].append(timer.seconds)
        finally:
            timer.restore()
            for _, engine, _ in setups.values():
                engine.dispose()
    results: dict[str, Any] = {"machine": describe(), "models": n_models, "features": len(FEATURES),
                               "rows_per_window": rows, "passes": passes, "setup_s": round(setup_s, 2),
                               "target_s": 10.0, "target_overhead_share": 0.2}
    for name, record in seen.items():
        totals, kernels = record["totals"], record["kernels"]
        total, kernel = statistics.median(totals), statistics.median(kernels)
        overhead = statistics.median((t - s) / t for t, s in zip(totals, kernels))
        results[name] = {
            "first_pass": record["first"],
            "tick_sensing_median_s": round(total, 3), "tick_sensing_max_s": round(max(totals), 3),
            "kernels_median_s": round(kernel, 3), "overhead_median_s": round(total - kernel, 3),
            "overhead_share_median": round(overhead, 3),
            "models_drifting": record["drifting"], "errors": record["errors"],
            "meets_time_target": max(totals) < 10.0, "meets_overhead_target": overhead < 0.2,
        }
    results["uncached_over_cached_tick"] = round(results["uncached"]["tick_sensing_median_s"]
                                                 / results["cached"]["tick_sensing_median_s"], 2)
    return results


def main() -> None:
    write_results("sensing", measure())


if __name__ == "__main__":
    main()
