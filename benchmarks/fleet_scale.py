"""A whole tick for a fleet of 1,000 models with small windows, on SQLite and on PostgreSQL (issue 7, "Fleet scale").

``python -m benchmarks.fleet_scale [--models N] [--postgres|--sqlite]``: the
fleet (1,000 models unless ``--models`` says otherwise) and a baseline fleet
of 100 models, measured in the same run on each backend (both unless one is
named), each configuration in its own fresh process so that its peak RSS is
its own. Results go to ``benchmarks/results/fleet_scale.json`` (``--output
NAME``: ``NAME.json``, so a run of one backend keeps the file of both) with the
machine's description; the test ``tests/controller/test_fleet_scale_benchmark.py``
runs :func:`measure_fleet` on a small fleet and checks its bookkeeping.

The world is :mod:`benchmarks.sensing`'s, smaller: each model has its own
Parquet inference log and labels (directories of five-minute parts as a
logging job writes them), 10 numeric features, 500 rows an hour (a 1-hour
drift and performance window: 500 rows; 41-row parts), a third of the fleet
drifting on four features. The knowledge base holds each model with a
production version (the drift reference is its training hour); SQLite is a
file, PostgreSQL a fresh database on 127.0.0.1:5432, dropped afterwards. The
controller is the real :class:`mape.controller.Controller` with the shipped
policies of ``policies/`` (the GPU and carbon-aware ones select no model:
none carries their labels), stepped by a fake clock five minutes a tick,
the next five minutes of every log and labels arriving before each tick.

What a tick is measured as:

- its wall time (``Controller.tick``), and each stage's, through the tick's
  ``wrap`` argument (begin, reconcile, monitor, analyze, verify, canary, plan,
  dispatch, notify, finish) plus the actions run; what no stage holds is
  reported as ``outside_stages``;
- the statistical kernels (``DriftSensor.score``, ``DataQualitySensor.score``,
  ``PerformanceSensor.score``) timed inside the tick with
  :class:`benchmarks.sensing._Timer`, and again **alone**: the calls of the
  last tick recorded and replayed on the same arrays after it (the pure
  statistics time);
- the engine's overhead: the tick less the kernels, in seconds and as a share;
- the rows it wrote (new rows per table) and the SQL statements it sent;
- garbage collection, timed by the collector's callbacks
  (:class:`benchmarks.sensing._Collections`).

Medians and p95 over the ticks after the warm-up ones (the first tick also
reads and fits every reference; it is reported apart). One more tick runs
under ``cProfile`` on the large fleet; its top functions by own time and by
cumulative time are reported as shares of that tick.
"""

from __future__ import annotations

import argparse
import cProfile
import concurrent.futures
import multiprocessing
import os
import pstats
import resource
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")

import gc  # noqa: E402

from sqlalchemy import event, func, select  # noqa: E402
from sqlalchemy.engine import Engine  # noqa: E402
from sqlmodel import SQLModel  # noqa: E402

from benchmarks.machine import describe, write_results  # noqa: E402
from benchmarks.scratch_postgres import scratch_database  # noqa: E402
from benchmarks.sensing import PART, START, _Collections, _knowledge_base, _Timer, _World  # noqa: E402
from knowledge.database import session_scope  # noqa: E402
from mape._util.heap import settle_heap  # noqa: E402
from mape.config import Settings  # noqa: E402
from mape.controller import Controller  # noqa: E402
from mape.monitor.sensors import DriftSensor, PerformanceSensor  # noqa: E402
from mape.monitor.sensors.quality import DataQualitySensor  # noqa: E402

FEATURES = [f"x{i:02d}" for i in range(10)]
ROWS = 500  # rows an hour: the 1-hour window's size
REPOSITORY = f"{Path(__file__).resolve().parent.parent}/"
POLICIES = Path(REPOSITORY) / "policies"
KERNELS = ((DriftSensor, "score"), (PerformanceSensor, "score"), (DataQualitySensor, "score"))
STAGES = ("begin", "reconcile", "monitor", "analyze", "verify", "canary", "plan", "dispatch", "notify", "finish")


class _Recorder:
    """Wraps the kernels so that, while ``on``, each call (the sensor, its arguments) is kept to be replayed alone."""

    def __init__(self) -> None:
        self.on = False
        self.calls: list[tuple[Callable[..., Any], tuple[Any, ...], dict[str, Any]]] = []
        self._originals: list[tuple[Any, str, Callable[..., Any]]] = []

    def wrap(self, owner: Any, name: str) -> None:
        original = getattr(owner, name)
        recorder = self

        def recorded(*args: Any, **kwargs: Any) -> Any:
            if recorder.on:
                recorder.calls.append((original, args, kwargs))
            return original(*args, **kwargs)

        self._originals.append((owner, name, original))
        setattr(owner, name, recorded)

    def replay(self) -> float:
        """Run the recorded calls again, one after the other; the seconds they took."""
        began = time.perf_counter()
        for original, args, kwargs in self.calls:
            original(*args, **kwargs)
        return time.perf_counter() - began

    def restore(self) -> None:
        for owner, name, original in reversed(self._originals):
            setattr(owner, name, original)


class _Statements:
    """Counts the SQL statements an engine sends (each ``executemany`` counts once)."""

    def __init__(self, engine: Engine) -> None:
        self.count = 0
        self.engine = engine
        event.listen(engine, "before_cursor_execute", self._seen)

    def _seen(self, *args: Any, **kwargs: Any) -> None:
        self.count += 1

    def close(self) -> None:
        event.remove(self.engine, "before_cursor_execute", self._seen)


def _row_counts(engine: Engine) -> dict[str, int]:
    """Rows in every table of the knowledge base."""
    with session_scope(engine) as session:
        return {name: session.execute(select(func.count()).select_from(table)).scalar_one()
                for name, table in SQLModel.metadata.tables.items()}


def _p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]


def _profile_table(profile: cProfile.Profile, tick_s: float, top: int = 15) -> dict[str, list[dict[str, Any]]]:
    """The profiled tick's top functions by own time and by cumulative time, as seconds and shares of the tick."""
    stats = pstats.Stats(profile)
    rows = []
    for (path, line, name), (_, calls, own, cumulative, _) in stats.stats.items():  # type: ignore[attr-defined]
        where = path.split("/site-packages/")[-1].removeprefix(REPOSITORY)
        rows.append({"function": f"{where}:{line}({name})", "calls": calls, "own_s": round(own, 3),
                     "cumulative_s": round(cumulative, 3), "cumulative_share": round(cumulative / tick_s, 3),
                     "own_share": round(own / tick_s, 3)})
    return {"by_own_time": sorted(rows, key=lambda r: -r["own_s"])[:top],
            "by_cumulative_time": sorted(rows, key=lambda r: -r["cumulative_s"])[:top * 2]}


def measure_fleet(n_models: int, url: str, root: Path, *, ticks: int = 5, warmup: int = 1,
                  profile: bool = False) -> dict[str, Any]:
    """Build a fleet of ``n_models`` over the knowledge base at ``url`` and time ``warmup + ticks`` real ticks.

    Parameters
    ----------
    n_models : int
        Managed models, each with its own logs (10 features, 500-row windows).
    url : str
        A reachable, empty database (SQLite file or PostgreSQL); migrated here.
    root : Path
        A directory for the logs, artifacts and serving state.
    ticks, warmup : int
        Ticks measured, and ticks before them (the first fits the references).
    profile : bool
        Run one more tick under ``cProfile`` and report its top functions.

    Returns
    -------
    dict
        Per tick (``per_tick``) and as medians: wall time, stages, kernels in the
        tick and alone, overhead, rows written, statements, collections.
    """
    began = time.perf_counter()
    extra = 1 if profile else 0
    world = _World(root / "data", n_models, ROWS, warmup + ticks + extra, features=FEATURES)
    engine, _ = _knowledge_base(url, world.configs)
    settings = Settings(db_url=url, policies_dir=POLICIES, artifacts_dir=root / "artifacts",
                        serving_dir=root / "serving", models=world.configs, controller_id="bench")
    now = [START]
    controller = Controller(settings, clock=lambda: now[0], engine=engine)
    settle_heap()  # what flows.controllers does once the controller is built
    setup_s = time.perf_counter() - began

    timer, recorder = _Timer(), _Recorder()
    for owner, name in KERNELS:
        recorder.wrap(owner, name)
        timer.wrap(owner, name)  # outermost: the recorder's own cost is counted as kernel time (an append)
    collections = _Collections(timer)
    statements = _Statements(engine)
    gc.callbacks.append(collections)
    records: list[dict[str, Any]] = []
    profiled: dict[str, Any] | None = None
    try:
        for k in range(warmup + ticks + extra):
            at = START + timedelta(hours=2) + k * PART
            world.arrive(at)
            now[0] = at
            before = _row_counts(engine)
            stages: dict[str, float] = {}

            def wrap(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
                def timed(*args: Any, **kwargs: Any) -> Any:
                    start = time.perf_counter()
                    try:
                        return fn(*args, **kwargs)
                    finally:
                        stages[name] = stages.get(name, 0.0) + time.perf_counter() - start
                return timed

            def run_action(run_id: int, at: datetime) -> None:
                wrap("actions", controller.run_action)(run_id, at)

            timer.reset()
            collections.seconds = 0.0
            statements.count = 0
            recorder.calls = []
            recorder.on = k == warmup + ticks - 1  # the last measured tick: its calls are replayed alone
            profiler = cProfile.Profile() if k == warmup + ticks else None
            start = time.perf_counter()
            if profiler is not None:
                profiler.enable()
            report = controller.tick(at, wrap=wrap, run_action=run_action)
            if profiler is not None:
                profiler.disable()
            wall = time.perf_counter() - start
            recorder.on = False
            sent = statements.count
            after = _row_counts(engine)
            written = {name: after[name] - before[name] for name in after if after[name] != before[name]}
            if profiler is not None:
                profiled = {"tick_s": round(wall, 3), **_profile_table(profiler, wall)}
                continue
            record = {"tick_s": wall, "stages_s": stages, "kernels_s": timer.seconds, "gc_s": collections.seconds,
                      "rows_written": written, "statements": sent, "errors": list(report.errors),
                      "decisions": len(report.decisions), "actions": len(report.actions),
                      "drifting": sum(1 for s in report.signals.values()
                                      if s.get("detected"))}
            if recorder.calls:
                gc.collect()
                record["statistics_alone_s"] = statistics.median(recorder.replay() for _ in range(3))
                record["kernel_calls"] = len(recorder.calls)
                recorder.calls = []
            records.append(record)
    finally:
        gc.callbacks.remove(collections)
        timer.restore()
        recorder.restore()
        statements.close()
        controller.engine.dispose()
    return _summarise(n_models, records[:warmup], records[warmup:], setup_s, profiled)


def _summarise(n_models: int, first: list[dict[str, Any]], measured: list[dict[str, Any]], setup_s: float,
               profiled: dict[str, Any] | None) -> dict[str, Any]:
    ticks = [r["tick_s"] for r in measured]
    kernels = [r["kernels_s"] for r in measured]
    tick, kernel = statistics.median(ticks), statistics.median(kernels)
    seen = [name for r in measured for name in r["stages_s"]]  # the stages this controller has (it may add some)
    names = dict.fromkeys([*STAGES, *seen, "actions"])
    stages = {name: round(statistics.median(r["stages_s"].get(name, 0.0) for r in measured), 4) for name in names}
    outside = statistics.median(r["tick_s"] - sum(r["stages_s"].values()) for r in measured)
    alone = next(r["statistics_alone_s"] for r in reversed(measured) if "statistics_alone_s" in r)
    tables = sorted({name for r in measured for name in r["rows_written"]})
    rows = {name: statistics.median(r["rows_written"].get(name, 0) for r in measured) for name in tables}
    result: dict[str, Any] = {
        "models": n_models, "features": len(FEATURES), "rows_per_window": ROWS, "ticks": len(measured),
        "setup_s": round(setup_s, 2),
        "first_ticks_s": [round(r["tick_s"], 3) for r in first],
        "tick_median_s": round(tick, 3), "tick_p95_s": round(_p95(ticks), 3),
        "tick_per_model_ms": round(1000 * tick / n_models, 3),
        "stages_median_s": stages, "outside_stages_median_s": round(outside, 4),
        "kernels_in_tick_median_s": round(kernel, 3),
        "statistics_alone_s": round(alone, 3),
        "overhead_median_s": round(tick - kernel, 3),
        "overhead_share_median": round(statistics.median((t - s) / t for t, s in zip(ticks, kernels)), 3),
        "gc_median_s": round(statistics.median(r["gc_s"] for r in measured), 3),
        "rows_written_per_tick": rows, "rows_written_per_tick_total": sum(rows.values()),
        "statements_per_tick": statistics.median(r["statements"] for r in measured),
        "decisions_per_tick": statistics.median(r["decisions"] for r in measured),
        "actions_per_tick": statistics.median(r["actions"] for r in measured),
        "models_drifting": measured[-1]["drifting"],
        "kernel_calls_per_tick": next(r["kernel_calls"] for r in measured if "kernel_calls" in r),
        "errors": sorted({e for r in measured for e in r["errors"]}),
        "ticks_s": [round(t, 3) for t in ticks],
        "per_tick": [{"tick_s": round(r["tick_s"], 4), "kernels_s": round(r["kernels_s"], 4),
                      "stages_s": {k: round(v, 4) for k, v in r["stages_s"].items()}} for r in measured],
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }
    if profiled is not None:
        result["profile"] = profiled
    return result


def _configuration(backend: str, n_models: int, ticks: int, warmup: int, profile: bool) -> dict[str, Any]:
    """One backend and fleet size, in a fresh process (called through a process pool)."""
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        if backend == "sqlite":
            return measure_fleet(n_models, f"sqlite:///{root / 'mape.db'}", root, ticks=ticks, warmup=warmup,
                                 profile=profile)
        with scratch_database("mape_bench_fleet") as url:
            return measure_fleet(n_models, url, root, ticks=ticks, warmup=warmup, profile=profile)


def _in_fresh_process(*args: Any) -> dict[str, Any]:
    context = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(max_workers=1, mp_context=context) as pool:
        return pool.submit(_configuration, *args).result()


def _scaling(large: dict[str, Any], small: dict[str, Any]) -> dict[str, Any]:
    """Large over small fleet: 1.0 per model-count ratio is linear."""
    factor = large["models"] / small["models"]

    def ratio(a: float, b: float) -> float | None:
        return round(a / b, 2) if b else None

    return {
        "model_ratio": factor,
        "tick": ratio(large["tick_median_s"], small["tick_median_s"]),
        "stages": {name: ratio(large["stages_median_s"][name], small["stages_median_s"].get(name, 0.0))
                   for name in large["stages_median_s"]},
        "kernels": ratio(large["kernels_in_tick_median_s"], small["kernels_in_tick_median_s"]),
        "overhead": ratio(large["overhead_median_s"], small["overhead_median_s"]),
        "statements": ratio(large["statements_per_tick"], small["statements_per_tick"]),
        "rows_written": ratio(large["rows_written_per_tick_total"], small["rows_written_per_tick_total"]),
        "peak_rss": ratio(large["peak_rss_mib"], small["peak_rss_mib"]),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.fleet_scale", description=__doc__.split("\n")[0])
    parser.add_argument("--models", type=int, default=1000, help="models in the large fleet (default 1000)")
    parser.add_argument("--baseline-models", type=int, default=100, help="models in the baseline fleet (default 100)")
    parser.add_argument("--ticks", type=int, default=5, help="ticks measured after the warm-up (default 5)")
    parser.add_argument("--warmup", type=int, default=1, help="ticks before them (default 1: fits the references)")
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--postgres", action="store_true", help="PostgreSQL only")
    group.add_argument("--sqlite", action="store_true", help="SQLite only")
    parser.add_argument("--output", default="fleet_scale",
                        help="results file name under benchmarks/results/, without .json (default fleet_scale)")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    backends = ["postgresql"] if args.postgres else ["sqlite"] if args.sqlite else ["sqlite", "postgresql"]
    results: dict[str, Any] = {"machine": describe(), "features": len(FEATURES), "rows_per_window": ROWS,
                               "policies": sorted(p.name for p in POLICIES.glob("*.yaml")
                                                  if not p.name.endswith(".test.yaml"))}
    for backend in backends:
        small = _in_fresh_process(backend, args.baseline_models, args.ticks, args.warmup, False)
        print(f"{backend}, {args.baseline_models} models: {small['tick_median_s']} s a tick", flush=True)
        large = _in_fresh_process(backend, args.models, args.ticks, args.warmup, True)
        print(f"{backend}, {args.models} models: {large['tick_median_s']} s a tick", flush=True)
        results[backend] = {"baseline": small, "fleet": large, "fleet_over_baseline": _scaling(large, small)}
    write_results(args.output, results)


if __name__ == "__main__":
    main()
