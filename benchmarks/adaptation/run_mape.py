"""The ``mape`` strategy: the real engine, ticked once per simulated hour on a stream.

Who calls it: :func:`benchmarks.adaptation.main`, once per scenario and seed.

A real :class:`mape.controller.Controller` with a SQLite knowledge base in a
temporary directory, the shipped policies ``retrain-on-drift``,
``retrain-on-concept-drift``, ``rollback-on-regression`` and ``fairness-guard``
copied verbatim from ``policies/``, the built-in ``retrain`` and ``rollback`` effectors, the
promotion gate, and energy metering on. The clock is stepped one hour per
tick; before each tick the hour's requests are scored by the version the
registry says is in production and written as Parquet parts (inference log,
and labels arriving 45 minutes after each request), as the credit demo does
(:mod:`examples.credit.serving`; the small part needed is repeated here).

Configuration that only the benchmark can give (the policies are untouched):
the model's sources and features, ``drift.window: 1h`` (one batch),
``performance: {window: 2h, min_samples: 300}``, ``promotion:
{evaluation_window: 1h, min_samples: 200}`` and, for the ``fairness``
scenario only, a fairness sensor on ``group`` with ``n_bootstrap: 0``
(fairness-guard reads the point gaps, not their intervals; the intervals cost
most of the sensor's time). Everything else is the engine's default.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sqlalchemy import func
from sqlmodel import select

from benchmarks.adaptation.scenarios import CATEGORICAL, FEATURES, NUMERIC, SENSITIVE, Scenario
from benchmarks.adaptation.strategies import ENTRYPOINT, HISTORY, START, Initial, at, initial_model
from benchmarks.adaptation.trace import Action, Trace, score
from knowledge import registry
from knowledge.database import session_scope
from knowledge.tables import ActionRun, Decision, Symptom
from mape.config import settings_from_mapping
from mape.controller import Controller
from mape.execute.training import load_artifact, save_artifact

MODEL = "adaptive"
POLICIES = ("retrain-on-drift.yaml", "retrain-on-concept-drift.yaml", "rollback-on-regression.yaml",
            "fairness-guard.yaml")
REPO_ROOT = Path(__file__).resolve().parents[2]
LABEL_DELAY = timedelta(minutes=45)
ACTING = ("proposed", "approved")


def write_policies(directory: Path, source: Path = REPO_ROOT / "policies") -> Path:
    """Copy the shipped policies that apply here, byte for byte, into ``directory/policies``."""
    target = directory / "policies"
    target.mkdir(parents=True, exist_ok=True)
    for name in POLICIES:
        shutil.copyfile(source / name, target / name)
    return target


def config(directory: Path, scenario: Scenario) -> dict[str, Any]:
    """The engine's configuration for one run (see the module docstring for what the benchmark sets)."""
    model: dict[str, Any] = {
        "name": MODEL,
        "features": {"numeric": NUMERIC, "categorical": CATEGORICAL},
        "inference": {"kind": "parquet", "path": "data/inference", "timestamp_column": "timestamp",
                      "id_column": "request_id"},
        "labels_source": {"kind": "parquet", "path": "data/labels", "timestamp_column": "labelled_at",
                          "id_column": "request_id"},
        "training": {"entrypoint": ENTRYPOINT},
        "drift": {"window": "1h"},
        "performance": {"window": "2h", "min_samples": 300},
        "promotion": {"evaluation_window": "1h", "min_samples": 200},
    }
    if scenario.fairness:
        model["fairness"] = {"sensitive": [SENSITIVE], "n_bootstrap": 0}
    return {"db_url": "sqlite:///mape.db", "policies_dir": "policies", "artifacts_dir": "artifacts",
            "serving_dir": "serving", "tick_interval": "1h", "controller_id": "adaptation-bench",
            "models": [model]}


class Serving:
    """Scores each batch with the production version and writes its inference log and labels as Parquet parts."""

    def __init__(self, directory: Path, engine: Any) -> None:
        self.directory, self.engine = directory, engine
        self._loaded: dict[int, Any] = {}
        self._next_id = 0
        for part in ("inference", "labels"):
            (directory / part).mkdir(parents=True, exist_ok=True)

    def production(self) -> tuple[int, Any]:
        with session_scope(self.engine) as session:
            version = registry.production_version(session, registry.get_model(session, MODEL).id)
            assert version is not None, "the benchmark promotes version 1 before the first batch"
            number, uri = version.version, version.artifact_uri
        if number not in self._loaded:
            self._loaded[number] = load_artifact(uri)
        return number, self._loaded[number]

    def serve(self, name: str, batch: pd.DataFrame, start: datetime, hours: int = 1) -> tuple[int, np.ndarray]:
        version, estimator = self.production()
        rng = np.random.default_rng(self._next_id)
        log = batch.drop(columns=["label"]).copy()
        offsets = np.sort(rng.uniform(0, 3600 * hours, size=len(batch)))
        log.insert(0, "timestamp", pd.to_datetime(start) + pd.to_timedelta(offsets, unit="s"))
        log.insert(0, "request_id", [f"r{self._next_id + i:09d}" for i in range(len(batch))])
        self._next_id += len(batch)
        predictions = estimator.predict(batch[FEATURES]).astype(int)
        log["prediction"] = predictions
        log["model_version"] = version
        log.to_parquet(self.directory / "inference" / f"{name}.parquet", index=False)
        pd.DataFrame({"request_id": log["request_id"], "labelled_at": log["timestamp"] + LABEL_DELAY,
                      "label": batch["label"].to_numpy()}).to_parquet(
            self.directory / "labels" / f"{name}.parquet", index=False)
        return version, predictions


def _tick_of(time_: datetime) -> int:
    """The tick a logical time belongs to (times are tick boundaries here)."""
    return int(round((time_.replace(tzinfo=START.tzinfo) - START) / timedelta(hours=1)))


def _bootstrap(controller: Controller, serving: Serving, initial: Initial, directory: Path) -> None:
    """Register and promote version 1 (the shared one), and serve the history with it."""
    uri = save_artifact(initial.estimator, directory / "artifacts" / MODEL / "bootstrap")
    with session_scope(controller.engine) as session:
        model = registry.get_model(session, MODEL)
        version = registry.register_version(
            session, model_id=model.id, artifact_uri=uri, metrics={"accuracy": initial.accuracy},
            training_window=(at(-HISTORY), at(-4)), actor="bench-bootstrap")
        registry.promote(session, version, actor="bench-bootstrap", reason="initial version", at=at(0))
    history = pd.concat([initial.history[k] for k in sorted(initial.history)], ignore_index=True)
    serving.serve("history", history, at(-HISTORY), hours=HISTORY)


def run_mape(scenario: Scenario, seed: int, initial: Initial | None = None, *,
             workdir: Path | None = None) -> Trace:
    """Serve ``scenario`` with the engine in the loop; the trace, with the engine's own figures in ``engine``."""
    os.environ.setdefault("CODECARBON_LOG_LEVEL", "error")
    initial = initial or initial_model(scenario, seed)
    engine_log = logging.getLogger("mape")
    level = engine_log.level
    engine_log.setLevel(logging.ERROR)  # the engine's one-line warnings (verdicts, ...) are in the knowledge base
    try:
        return _run(scenario, seed, initial, workdir)
    finally:
        engine_log.setLevel(level)


def _run(scenario: Scenario, seed: int, initial: Initial, workdir: Path | None) -> Trace:
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        directory = Path(tmp)
        write_policies(directory)
        settings = settings_from_mapping(config(directory, scenario), source="adaptation-bench", base=directory)
        now = {"at": at(0)}
        controller = Controller(settings, clock=lambda: now["at"])
        if controller.policy_errors:
            raise RuntimeError(f"the shipped policies did not load: {controller.policy_errors}")
        serving = Serving(directory / "data", controller.engine)
        _bootstrap(controller, serving, initial, directory)
        db_file = directory / "mape.db"
        db_start = _db_size(db_file)
        rows_start = _row_counts(controller.engine)
        trace = Trace(strategy="mape", scenario=scenario.name, seed=seed)
        tick_cpu: list[float] = []
        action_cpu = 0.0

        def timed_action(run_id: int, when: datetime) -> None:
            nonlocal action_cpu
            began = time.process_time()
            try:
                controller.run_action(run_id, when)
            finally:
                action_cpu += time.process_time() - began

        for tick in range(1, scenario.ticks + 1):
            batch = scenario.batch(tick, seed=seed)
            version, predictions = serving.serve(f"tick-{tick:04d}", batch, at(tick) - timedelta(hours=1))
            trace.record(*score(predictions, batch), version)
            now["at"] = at(tick)
            began = time.process_time()
            report = controller.tick(at(tick), run_action=timed_action)
            tick_cpu.append(time.process_time() - began)
            if report.errors:
                trace.engine.setdefault("errors", []).extend(f"tick {tick}: {e}" for e in report.errors)
        _read_back(controller, trace)
        rows_end = _row_counts(controller.engine)
        controller.engine.dispose()
        db_end = _db_size(db_file)
    total_cpu = sum(tick_cpu)
    trace.train_cpu_s = action_cpu
    trace.engine.update({
        "cpu_s_per_tick_median": round(float(np.median(tick_cpu)), 4),
        "cpu_s_per_tick_mean": round(total_cpu / len(tick_cpu), 4),
        "cpu_s_per_model_tick_mean": round(total_cpu / len(tick_cpu), 4),  # one managed model
        "cpu_s_total": round(total_cpu, 2),
        "cpu_s_actions": round(action_cpu, 2),
        "action_share_of_tick_cpu": round(action_cpu / total_cpu, 3) if total_cpu else None,
        "db_bytes_start": db_start, "db_bytes_end": db_end,
        "db_bytes_per_tick": round((db_end - db_start) / scenario.ticks),
        "rows_per_tick": {table: round((rows_end[table] - rows_start.get(table, 0)) / scenario.ticks, 2)
                          for table in rows_end},
    })
    return trace


def _db_size(path: Path) -> int:
    """The knowledge base's bytes on disk, its write-ahead log included."""
    return sum(p.stat().st_size for p in (path, path.with_name(path.name + "-wal")) if p.exists())


def _row_counts(engine: Any) -> dict[str, int]:
    from knowledge.tables import SQLModel

    counts = {}
    with engine.connect() as conn:
        for name, table in SQLModel.metadata.tables.items():
            counts[name] = int(conn.execute(select(func.count()).select_from(table)).scalar_one())
    return counts


def _read_back(controller: Controller, trace: Trace) -> None:
    """The decisions, action runs and symptoms of the run, from the knowledge base (the source of truth)."""
    with session_scope(controller.engine) as session:
        decisions = {d.id: d for d in session.exec(select(Decision).order_by(Decision.id))}
        for decision in decisions.values():
            if decision.status in ACTING and decision.tick_at is not None:
                trace.decisions.append((_tick_of(decision.tick_at), decision.action))
        for run in session.exec(select(ActionRun).order_by(ActionRun.id)):
            decision = decisions.get(run.decision_id)
            started = run.started_at or run.created_at
            if run.state != "succeeded":
                outcome = "failed"
            elif run.action == "retrain":
                outcome = "promoted" if (run.result or {}).get("promoted") else "rejected"
            else:
                outcome = "rolled back"
            trace.actions.append(Action(_tick_of(started), run.action, outcome,
                                        _tick_of(decision.tick_at) if decision and decision.tick_at else None))
            trace.engine.setdefault("runs", []).append({
                "tick": _tick_of(started), "action": run.action, "state": run.state,
                "policy": decision.policy_name if decision else None, "energy_kwh": run.energy_kwh,
                "result": {k: v for k, v in (run.result or {}).items() if k in ("version", "promoted", "reason",
                                                                                 "to_version")},
                "verdict": run.verdict})
            if run.state == "succeeded":
                trace.add_energy(run.energy_kwh)
        for symptom in session.exec(select(Symptom).order_by(Symptom.id)):
            trace.symptoms.append((_tick_of(symptom.opened_at), symptom.kind))
