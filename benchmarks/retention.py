"""Benchmark: the retention pass over a knowledge base of 1,008,000 observations, SQLite and PostgreSQL.

A fleet of 10 models whose sensors write 70 rows a tick (the dashboard
benchmark's tick, :func:`benchmarks.dashboard._tick_rows`) every 5 minutes for
5 days, with 1,000 observations named as symptoms' evidence and a 2 KB report
on every tick. The pass keeps 2 days raw and folds the 3 older days into
1-hour buckets. Measured: the first pass, a repeated pass (nothing to do), a
dry run, rows and bytes before and after, SQLite's VACUUM afterwards (not part
of the pass), and what the partial index of raw rows costs the monitor's
inserts (a tick's rows inserted with and without it, in the same run).

Run: ``python -m benchmarks.retention [--postgres]``; writes
``benchmarks/results/retention.json`` with the machine's description.
"""

from __future__ import annotations

import contextlib
import statistics
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import func, select, text

from benchmarks.dashboard import _tick_rows
from benchmarks.machine import describe, write_results
from benchmarks.scratch_postgres import knowledge_bases
from knowledge import queries, registry, retention
from knowledge.database import create_engine_for, session_scope
from knowledge.migrate import upgrade
from knowledge.tables import Observation, Symptom, Tick

START = datetime(2026, 10, 1, tzinfo=timezone.utc)
MODELS = 10
TICK = timedelta(minutes=5)
DAYS = 5
RAW_FOR = timedelta(days=2)
BUCKET = timedelta(hours=1)
EVIDENCE = 1000
INSERT_TICKS = 30


def fill(url: str) -> dict[str, Any]:
    """Migrate ``url`` and fill it; returns what it holds and how long filling took."""
    began = time.perf_counter()
    upgrade(url)
    engine = create_engine_for(url)
    rng = np.random.default_rng(7)
    with session_scope(engine) as session:
        ids = [registry.upsert_model(session, name=f"model-{i:02d}").id for i in range(MODELS)]
    ticks = int(timedelta(days=DAYS) / TICK)
    report = {"signals": {"drift": {"share_drifted": 0.1}}, "notes": ["x" * 60] * 30}
    for n in range(ticks):
        at = START + n * TICK
        with session_scope(engine) as session:
            queries.add_observations(session, [r for model_id in ids for r in _tick_rows(model_id, at, n // 12, rng)])
            tick, _ = queries.begin_tick(session, at, controller_id="benchmark")
            queries.finish_tick(session, tick, status="ok", summary=report)
    with session_scope(engine) as session:  # symptoms naming old observations as evidence
        step = max(1, int(ticks * 0.6) * MODELS * 70 // EVIDENCE)
        for k in range(EVIDENCE // 10):
            first = 1 + k * 10 * step
            session.add(Symptom(model_id=ids[k % MODELS], kind="drift", opened_at=START, last_seen_at=START,
                                evidence={"opened_by": [{"observation_id": first + j * step} for j in range(10)]}))
    with engine.connect() as conn:
        held = conn.execute(select(func.count()).select_from(Observation)).scalar_one()
    engine.dispose()
    return {"observations": held, "ticks": ticks, "evidence": EVIDENCE, "fill_s": round(time.perf_counter() - began, 1)}


def _insert_cost(url: str) -> dict[str, Any]:
    """Median seconds to insert one tick's rows (700) with the partial index of raw rows, and without it."""
    engine = create_engine_for(url)
    rng = np.random.default_rng(8)
    at = START + timedelta(days=DAYS)

    def one_tick(n: int) -> float:
        rows = [r for model_id in range(1, MODELS + 1) for r in _tick_rows(model_id, at + n * TICK, 0, rng)]
        began = time.perf_counter()
        with session_scope(engine) as session:
            queries.add_observations(session, rows)
        return time.perf_counter() - began

    try:
        with_index = statistics.median(one_tick(n) for n in range(INSERT_TICKS))
        with engine.begin() as conn:
            conn.execute(text("DROP INDEX ix_observation_raw_time"))
        without = statistics.median(one_tick(INSERT_TICKS + n) for n in range(INSERT_TICKS))
        with engine.begin() as conn:
            conn.execute(text("CREATE INDEX ix_observation_raw_time ON observation (time) WHERE samples IS NULL"))
    finally:
        engine.dispose()
    return {"tick_rows": MODELS * 70, "with_raw_index_s": round(with_index, 5), "without_s": round(without, 5),
            "ratio": round(with_index / without, 3)}


def measure(url: str) -> dict[str, Any]:
    engine = create_engine_for(url)
    at = START + timedelta(days=DAYS)
    args = dict(at=at, raw_for=RAW_FOR, bucket=BUCKET)
    try:
        dry = retention.thin(engine, dry_run=True, **args)
        first = retention.thin(engine, **args)
        again = [retention.thin(engine, **args) for _ in range(3)]
        with engine.connect() as conn:
            pruned = conn.execute(select(func.count()).select_from(Tick).where(Tick.at < first.cutoff)).scalar_one()
        result: dict[str, Any] = {
            "dry_run_s": dry.seconds, "first_pass": first.model_dump(mode="json"),
            "repeated_pass_s": statistics.median(r.seconds for r in again),
            "repeated_changes": [r.raw_rows_replaced + r.bucket_rows_written + r.tick_reports_pruned for r in again],
            "rows_ratio_after_before": round(first.observations_after / first.observations_before, 3),
            "old_ticks_pruned": pruned,
        }
        if engine.dialect.name == "sqlite":
            began = time.perf_counter()
            with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
                conn.exec_driver_sql("VACUUM")
                result["vacuum_s"] = round(time.perf_counter() - began, 2)
                result["after_vacuum"] = retention.storage(conn)
    finally:
        engine.dispose()
    result["insert_cost"] = _insert_cost(url)
    return result


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    results: dict[str, Any] = {"machine": describe(), "models": MODELS, "tick_s": TICK.total_seconds(), "days": DAYS,
                               "raw_for": str(RAW_FOR), "bucket": str(BUCKET)}
    with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as stack:
        backends = knowledge_bases(stack, Path(tmp), postgres="--postgres" in argv, prefix="mape_bench_retention")
        for backend, url in backends.items():
            print(f"filling the {backend} knowledge base...", flush=True)
            held = fill(url)
            print(f"  {held}", flush=True)
            results[backend] = {"holds": held, **measure(url)}
    write_results("retention", results)


if __name__ == "__main__":
    main()
