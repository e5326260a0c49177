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

import gc
import statistics
import tempfile
import time
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
from sqlalchemy.engine import Engine

from benchmarks.machine import describe, write_results
from knowledge import registry
from knowledge.database import create_engine_for, session_scope
from knowledge.migrate import upgrade
import mape.monitor.stage as monitor_stage
from mape.config import ModelConfig
from mape.data.sources import FileSource
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

    def __init__(self, root: Path, n_models: int, rows: int, passes: int, features: list[str] = FEATURES) -> None:
        self.root, self.rows = root, rows
        per_part = rows // 12
        total = 2 * rows + passes * per_part
        step = timedelta(hours=1) / rows
        rng = np.random.default_rng(0)
        self.frames: list[pd.DataFrame] = []
        self.configs: list[ModelConfig] = []
        for m in range(n_models):
            frame = pd.DataFrame(rng.normal(size=(total, len(features))), columns=features)
            if m % 3 == 0:
                frame.loc[rows:, features[:4]] += 0.5
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
                "name": f"model-{m:03d}", "features": {"numeric": features},
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

    def newest(self) -> list[Path]:
        """Every model's last-written parts, log and labels (what a tick's reads must decode)."""
        name = f"part-{self.written - PART:%H%M}.parquet"
        return [self.root / f"m{m:03d}" / kind / name for m in range(len(self.frames)) for kind in ("inference", "labels")]

    def _write(self, m: int, start: datetime, end: datetime, name: str) -> None:
        frame = self.frames[m]
        rows = frame[(frame["timestamp"] >= start) & (frame["timestamp"] < end)]
        directory = self.root / f"m{m:03d}"
        rows.drop(columns="label").to_parquet(directory / "inference" / f"{name}.parquet", index=False)
        pd.DataFrame({"id": rows["id"], "timestamp": rows["timestamp"] + timedelta(minutes=10),
                      "label": rows["label"]}).to_parquet(directory / "labels" / f"{name}.parquet", index=False)


class _Timer:
    """Wraps functions and sums the time spent in them, by phase, each call less the wrapped calls inside it.

    ``seconds`` is the time of the phase ``kernels``; the other phases are
    in ``phases``. A wrapped call inside another (the labels read inside the
    join) counts for its own phase only.
    """

    def __init__(self) -> None:
        self.phases: dict[str, float] = {}
        self._inner: list[float] = []  # per open wrapped call: the time of the wrapped calls inside it
        self._originals: list[tuple[Any, str, Callable[..., Any]]] = []

    @property
    def seconds(self) -> float:
        return self.phases.get("kernels", 0.0)

    def reset(self) -> None:
        self.phases = {}

    def wrap(self, owner: Any, name: str, phase: str = "kernels") -> None:
        original = getattr(owner, name)
        timer = self

        def timed(*args: Any, **kwargs: Any) -> Any:
            began = time.perf_counter()
            timer._inner.append(0.0)
            try:
                return original(*args, **kwargs)
            finally:
                elapsed = time.perf_counter() - began
                inner = timer._inner.pop()
                timer.phases[phase] = timer.phases.get(phase, 0.0) + elapsed - inner
                if timer._inner:
                    timer._inner[-1] += elapsed

        self._originals.append((owner, name, original))
        setattr(owner, name, timed)

    def restore(self) -> None:
        for owner, name, original in reversed(self._originals):
            setattr(owner, name, original)


class _Collections:
    """The time the garbage collector spends, from its own callbacks; not counted in the phase it interrupted."""

    def __init__(self, timer: _Timer) -> None:
        self.timer = timer
        self.seconds = 0.0
        self._began = 0.0

    def __call__(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._began = time.perf_counter()
        else:
            elapsed = time.perf_counter() - self._began
            self.seconds += elapsed
            if self.timer._inner:
                self.timer._inner[-1] += elapsed


def _decode_seconds(paths: list[Path]) -> float:
    """The time to decode these Parquet files, footers parsed beforehand (what any reader of new parts pays)."""
    footers = [pq.read_metadata(path) for path in paths]
    began = time.perf_counter()
    for path, footer in zip(paths, footers):
        with open(path, "rb") as handle:
            pq.ParquetFile(handle, metadata=footer).read(use_threads=False)
    return time.perf_counter() - began


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
        timer.wrap(FileSource, "read", "reads")
        timer.wrap(monitor_stage, "labelled_window", "join")
        timer.wrap(monitor_stage, "add_observations", "insert")
        collections = _Collections(timer)
        gc.callbacks.append(collections)
        seen: dict[str, dict[str, Any]] = {name: {"totals": [], "kernels": [], "errors": 0, "phases": [],
                                                  "decode": []} for name in runs}
        try:
            for k in range(passes + 1):
                at = START + timedelta(hours=2) + k * PART  # five more minutes of log and labels each pass
                world.arrive(at)
                newest = world.newest()
                for name, (monitor, engine, ids) in setups.items():  # alternated: the same machine state
                    timer.reset()
                    collections.seconds = 0.0
                    began = time.perf_counter()
                    with session_scope(engine) as session:
                        report = monitor.run(session, ids, at)
                        ran = time.perf_counter()
                    elapsed = time.perf_counter() - began
                    phases = {**timer.phases, "commit": elapsed - (ran - began), "gc": collections.seconds}
                    record = seen[name]
                    record["errors"] += len(report.errors)
                    record["drifting"] = sum(1 for m in report.models if m.detected)
                    if k == 0:  # also reads and fits the 100 references
                        record["first"] = {"total_s": round(elapsed, 3), "kernels_s": round(timer.seconds, 3),
                                           "observations": report.n_observations}
                        continue
                    record["totals"].append(elapsed)
                    record["kernels"].append(timer.seconds)
                    record["phases"].append(phases)
                    record["decode"].append(_decode_seconds(newest))
        finally:
            gc.callbacks.remove(collections)
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
        breakdown = {phase: round(statistics.median(p.get(phase, 0.0) for p in record["phases"]), 3)
                     for phase in ("reads", "join", "insert", "commit", "gc")}
        breakdown["other"] = round(total - kernel - sum(breakdown.values()), 3)
        floors = [d + p.get("insert", 0.0) + p["commit"] + p["gc"] for d, p in zip(record["decode"], record["phases"])]
        floor_share = statistics.median(f / (f + s) for f, s in zip(floors, kernels))
        results[name] = {
            "first_pass": record["first"],
            "tick_sensing_median_s": round(total, 3), "tick_sensing_max_s": round(max(totals), 3),
            "kernels_median_s": round(kernel, 3), "overhead_median_s": round(total - kernel, 3),
            "overhead_share_median": round(overhead, 3),
            "overhead_median_by_phase_s": breakdown,
            "floor": {"decode_new_parts_s": round(statistics.median(record["decode"]), 3),
                      "decode_insert_commit_gc_s": round(statistics.median(floors), 3),
                      "floor_share_median": round(floor_share, 3)},
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
