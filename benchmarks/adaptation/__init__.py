"""Adaptation quality (issue 7): mape against no adaptation, periodic retraining and an oracle, on streams with
known ground truth.

Who calls it: ``python -m benchmarks adaptation`` (``make bench``) through
:func:`main`, and ``tests/bench`` with ``--quick``.

Each scenario of :mod:`benchmarks.adaptation.scenarios` is served, seed by
seed, to the three baselines of :mod:`benchmarks.adaptation.strategies` and to
the real engine (:mod:`benchmarks.adaptation.run_mape`), all starting from the
same version 1; :mod:`benchmarks.adaptation.metrics` computes the figures,
:mod:`benchmarks.adaptation.report` judges the goals and writes
``benchmarks/results/adaptation.json``, ``adaptation.md`` and one SVG chart per
scenario under ``benchmarks/results/adaptation/``. The (scenario, seed) runs
are spread over two worker processes.
"""

from __future__ import annotations

import argparse
import os
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

from benchmarks.adaptation.diagnosis import diagnose
from benchmarks.adaptation.metrics import median_of, summarize
from benchmarks.adaptation.report import goals, write_chart, write_json, write_markdown
from benchmarks.adaptation.run_mape import run_mape
from benchmarks.adaptation.scenarios import SCENARIOS, Scenario
from benchmarks.adaptation.strategies import PERIOD, STRATEGIES, initial_model, run_baseline
from benchmarks.adaptation.trace import Trace
from benchmarks.machine import describe
from mape.data.energy import country_intensity

RESULTS = Path(__file__).resolve().parents[1] / "results"
QUICK_SCENARIOS = ("stationary", "abrupt-covariate")


def run_one(scenario: Scenario, seed: int) -> dict[str, Trace]:
    """Every strategy on one stream at one seed, all from the same version 1."""
    initial = initial_model(scenario, seed)
    traces = {name: run_baseline(name, scenario, seed, initial) for name in STRATEGIES}
    traces["mape"] = run_mape(scenario, seed, initial)
    return traces


def representative(runs: list[dict[str, Trace]]) -> int:
    """The index of the seed whose mape retrain count is the median (the lowest such seed): its chart and runs
    are shown."""
    counts = [len(r["mape"].retrains) for r in runs]
    middle = sorted(counts)[(len(counts) - 1) // 2]
    return counts.index(middle)


def _engine_median(traces: list[Trace], shown: int) -> dict[str, Any]:
    """The engine's own figures: medians over seeds, with the shown seed's runs and every seed's errors.

    ``rows_per_tick`` is the median per table over seeds.
    """
    engines = [t.engine for t in traces]
    numeric = {k: v for k, v in median_of([{k: v for k, v in e.items() if isinstance(v, (int, float))}
                                           for e in engines]).items()}
    rows = {table: sorted(e["rows_per_tick"][table] for e in engines)[len(engines) // 2]
            for table in engines[0]["rows_per_tick"]}
    return {**numeric, "rows_per_tick": rows, "runs": engines[shown].get("runs", []),
            "errors": [err for e in engines for err in e.get("errors", [])]}


def measure(scenarios: list[Scenario], seeds: list[int], *, quick: bool, workers: int = 2,
            out: Path = RESULTS) -> dict[str, Any]:
    began = time.monotonic()
    jobs = [(s, seed) for s in scenarios for seed in seeds]
    if workers > 1 and len(jobs) > 1:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            done = list(pool.map(run_one, *zip(*jobs)))
    else:
        done = [run_one(s, seed) for s, seed in jobs]
    by_scenario: dict[str, list[dict[str, Trace]]] = {}
    for (scenario, _), traces in zip(jobs, done):
        by_scenario.setdefault(scenario.name, []).append(traces)
    results: dict[str, Any] = {"machine": describe(), "quick": quick, "seeds": seeds,
                               "settings": {"periodic_every": PERIOD,
                                            "intensity_g_per_kwh": country_intensity(None).g_per_kwh},
                               "scenarios": {}}
    for scenario in scenarios:
        runs = by_scenario[scenario.name]
        shown = representative(runs)
        strategies = {name: median_of([summarize(r[name], scenario) for r in runs]) for name in (*STRATEGIES, "mape")}
        entry = {"name": scenario.name, "description": scenario.description, "ticks": scenario.ticks,
                 "rows": scenario.rows, "changes": list(scenario.changes),
                 "oracle_ticks": list(scenario.oracle_ticks()), "strategies": strategies,
                 "per_seed": {name: [summarize(r[name], scenario) for r in runs] for name in (*STRATEGIES, "mape")},
                 "shown_seed": seeds[shown],
                 "engine": _engine_median([r["mape"] for r in runs], shown),
                 "mape_symptoms_shown_seed": runs[shown]["mape"].symptoms,
                 "goals": goals(strategies, false_alarm_stream=scenario.false_alarm_stream)}
        entry["diagnosis"] = diagnose(entry, runs[shown]["mape"])
        results["scenarios"][scenario.name] = entry
        write_chart(entry, runs[shown], out)
    results["elapsed_s"] = round(time.monotonic() - began, 1)
    return results


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """``python -m benchmarks adaptation [--quick] [--seeds 0 1 2] [--scenarios ...] [--out DIR]``."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.adaptation", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="two scenarios, 40 ticks, one seed (the tests)")
    parser.add_argument("--seeds", type=int, nargs="+", default=None, help="seeds (default 0 1 2; quick: 0)")
    parser.add_argument("--scenarios", nargs="+", choices=sorted(SCENARIOS), default=None)
    parser.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1))
    parser.add_argument("--out", type=Path, default=RESULTS, help="where the JSON, the report and the charts go")
    args = parser.parse_args(argv or [])
    names = args.scenarios or (list(QUICK_SCENARIOS) if args.quick else list(SCENARIOS))
    scenarios = [SCENARIOS[n].quick() if args.quick else SCENARIOS[n] for n in names]
    seeds = args.seeds or ([0] if args.quick else [0, 1, 2])
    args.out.mkdir(parents=True, exist_ok=True)
    results = measure(scenarios, seeds, quick=args.quick, workers=args.workers, out=args.out)
    write_json(results, args.out)
    report = write_markdown(results, args.out)
    for name, scenario in results["scenarios"].items():
        print(f"{name}: " + ", ".join(f"{k} {'met' if v else 'NOT met'}" for k, v in scenario["goals"].items()
                                      if v is not None))
    print(f"report: {report} ({results['elapsed_s']:.0f} s)")
    return results


__all__ = ["main", "measure", "run_one"]
