"""A tick's sensing for a fleet: 100 models, 20 features, 5,000-row windows (issue 4: under 10 s, overhead under 20 %).

Each model has its own Parquet inference log (a 5,000-row training window,
the production version's drift reference, and a 5,000-row current hour) and
a Parquet file of labels. A SQLite knowledge base (a file, as in the embedded
default) holds the 100 models and their production versions. Each pass is a
real :meth:`mape.monitor.Monitor.run` at a new tick time: read every model's
current window, test 20 features for drift with Benjamini-Hochberg and the
effect-size floor, join predictions to the labels that arrived, score them,
and write the observations. The first pass also reads and fits the 100
references (once per production version) and is reported apart.

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


def _world(root: Path, n_models: int, rows: int) -> list[ModelConfig]:
    rng = np.random.default_rng(0)
    configs = []
    step = timedelta(hours=1) / rows
    for m in range(n_models):
        times = pd.date_range(START, periods=2 * rows, freq=step)  # the training hour, then the current hour
        frame = pd.DataFrame(rng.normal(size=(2 * rows, len(FEATURES))), columns=FEATURES)
        if m % 3 == 0:  # a third of the fleet drifts in the current hour
            frame.loc[rows:, FEATURES[:4]] += 0.5
        label = rng.integers(0, 2, size=2 * rows)
        frame.insert(0, "timestamp", times)
        frame.insert(0, "id", np.arange(2 * rows))
        frame["prediction"] = np.where(rng.uniform(size=2 * rows) < 0.85, label, 1 - label)
        frame["model_version"] = 1
        directory = root / f"m{m:03d}"
        directory.mkdir(parents=True)
        frame.to_parquet(directory / "inference.parquet")
        pd.DataFrame({"id": frame["id"], "timestamp": frame["timestamp"] + timedelta(minutes=10),
                      "label": label}).to_parquet(directory / "labels.parquet")
        configs.append(ModelConfig.model_validate({
            "name": f"model-{m:03d}", "features": {"numeric": FEATURES},
            "inference": {"kind": "parquet", "path": str(directory / "inference.parquet")},
            "labels_source": {"kind": "parquet", "path": str(directory / "labels.parquet")},
            "training": {"entrypoint": "examples.credit.model:train"},
            "drift": {"window": "1h", "min_samples": 100}, "performance": {"window": "1h", "min_samples": 100},
        }))
    return configs


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


def measure(n_models: int = 100, rows: int = 5000, passes: int = 5) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        began = time.perf_counter()
        configs = _world(root / "data", n_models, rows)
        url = f"sqlite:///{root / 'kb.db'}"
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
        setup_s = time.perf_counter() - began
        monitor = Monitor(configs)
        timer = _Timer()
        timer.wrap(DriftSensor, "score")
        timer.wrap(PerformanceSensor, "score")
        timer.wrap(DataQualitySensor, "score")
        totals, kernels, errors, first = [], [], 0, {}
        try:
            for k in range(passes + 1):
                at = START + timedelta(hours=2, minutes=k)  # the current hour, seen at successive ticks
                timer.seconds = 0.0
                began = time.perf_counter()
                with session_scope(engine) as session:
                    report = monitor.run(session, ids, at)
                elapsed = time.perf_counter() - began
                errors += len(report.errors)
                if k == 0:  # also reads and fits the 100 references
                    first = {"total_s": round(elapsed, 3), "kernels_s": round(timer.seconds, 3),
                             "observations": report.n_observations}
                    continue
                totals.append(elapsed)
                kernels.append(timer.seconds)
            drifting = sum(1 for m in report.models if m.detected)
        finally:
            timer.restore()
            engine.dispose()
    total, kernel = statistics.median(totals), statistics.median(kernels)
    overhead = [(t - s) / t for t, s in zip(totals, kernels)]
    return {
        "machine": describe(), "models": n_models, "features": len(FEATURES), "rows_per_window": rows,
        "passes": passes, "setup_s": round(setup_s, 2), "first_pass": first,
        "tick_sensing_median_s": round(total, 3), "tick_sensing_max_s": round(max(totals), 3),
        "kernels_median_s": round(kernel, 3), "overhead_median_s": round(total - kernel, 3),
        "overhead_share_median": round(statistics.median(overhead), 3),
        "models_drifting": drifting, "errors": errors,
        "target_s": 10.0, "target_overhead_share": 0.2,
        "meets_time_target": max(totals) < 10.0, "meets_overhead_target": statistics.median(overhead) < 0.2,
    }


def main() -> None:
    write_results("sensing", measure())


if __name__ == "__main__":
    main()
