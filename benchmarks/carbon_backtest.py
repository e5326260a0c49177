"""Carbon-aware deferral replayed over a year: savings against running at once, per forecaster (issue 5).

Each setting lets a job arrive every ``every`` on the shipped windy-grid year
(``examples/carbon/windy-grid.csv.gz``, hourly; one setting uses the same
model at 5 minutes, and one the solar-heavy ``diurnal-grid.csv``). Each job
may wait ``slack`` and runs ``duration``; it is planned on a forecast and its
emissions are realised on the actual series
(:func:`mape.plan.scheduling.backtest.backtest`). Forecasters: ``perfect``
(the bound), ``noisy:0.05`` (the literature's convention), ``past`` (a real
forecaster from the past only) and ``naive`` (yesterday), all behind the guard
that defers only when the predicted gain exceeds the forecaster's recent
error; ``naive`` and ``past`` also without it (``guard: false``), to show what
the guard does.

The goals, checked and written with the results in
``benchmarks/results/carbon_backtest.json``: every deadline met; no guarded
forecaster worse than running at once, in any setting; ``noisy:0.05`` at least
80 % of the perfect-foresight savings in the canonical setting (1 h jobs, 8 h
slack, one a day); ``past`` reported as it is.
"""

from __future__ import annotations

import time
from datetime import timedelta
from typing import Any

from benchmarks.machine import describe, write_results
from examples.carbon import DIURNAL_GRID, WINDY_GRID
from examples.carbon.windy_grid import windy_grid
from mape._util.timeutil import format_duration
from mape.plan.scheduling.backtest import backtest
from mape.plan.scheduling.trace import Trace, read_trace

H = timedelta(hours=1)
RUNS = [("perfect", True), ("noisy:0.05", True), ("past", True), ("naive", True), ("past", False), ("naive", False)]


def _settings() -> list[dict[str, Any]]:
    windy = read_trace(WINDY_GRID)
    return [
        {"name": "canonical: 1h jobs, 8h slack, one a day at midnight", "trace": windy,
         "duration": H, "slack": 8 * H, "every": 24 * H, "offset": timedelta(0)},
        {"name": "one a day at noon (the bottom of the solar dip)", "trace": windy,
         "duration": H, "slack": 8 * H, "every": 24 * H, "offset": 12 * H},
        {"name": "every 5h (arrivals cycle through the day)", "trace": windy,
         "duration": H, "slack": 8 * H, "every": 5 * H, "offset": timedelta(0)},
        {"name": "3h jobs, 24h slack, one a day", "trace": windy,
         "duration": 3 * H, "slack": 24 * H, "every": 24 * H, "offset": timedelta(0)},
        {"name": "canonical on the 5-minute windy grid", "trace": windy_grid(step=timedelta(minutes=5)),
         "duration": H, "slack": 8 * H, "every": 24 * H, "offset": timedelta(0)},
        {"name": "canonical on the solar-heavy diurnal grid (30 min)", "trace": read_trace(DIURNAL_GRID),
         "duration": H, "slack": 8 * H, "every": 24 * H, "offset": timedelta(0)},
    ]


def _run(trace: Trace, setting: dict[str, Any], forecast: str, guard: bool) -> dict[str, Any]:
    began = time.perf_counter()
    result = backtest(trace, duration=setting["duration"], slack=setting["slack"], every=setting["every"],
                      offset=setting["offset"], forecast=forecast, guard=guard)
    summary = result.as_dict()
    keep = ("jobs", "deadlines_met", "deferred", "moves", "savings_vs_run_now", "savings_bound", "share_of_bound",
            "predicted_savings", "jobs_worse_than_run_now", "forecast_mae_g_per_kwh", "mean_recent_error_g_per_kwh",
            "emissions_kg")
    return {"forecast": forecast, "guard": guard, **{k: summary[k] for k in keep},
            "seconds": round(time.perf_counter() - began, 2)}


def measure() -> dict[str, Any]:
    settings = []
    for setting in _settings():
        trace: Trace = setting["trace"]
        runs = [_run(trace, setting, forecast, guard) for forecast, guard in RUNS]
        settings.append({
            "name": setting["name"], "trace": f"{trace.source} ({format_duration(trace.step)}, {len(trace)} steps)",
            "duration": format_duration(setting["duration"]), "slack": format_duration(setting["slack"]),
            "every": format_duration(setting["every"]), "offset": format_duration(setting["offset"]),
            "savings_bound": runs[0]["savings_bound"], "runs": runs,
        })
        print(f"{setting['name']}: " + ", ".join(
            f"{r['forecast']}{'' if r['guard'] else ' (no guard)'} {r['savings_vs_run_now']:+.3f}" for r in runs)
            + f" of {runs[0]['savings_bound']:.3f}", flush=True)
    guarded = [(s, r) for s in settings for r in s["runs"] if r["guard"]]
    canonical = {r["forecast"]: r for r in settings[0]["runs"] if r["guard"]}
    goals = {
        "every_deadline_met": all(r["deadlines_met"] == r["jobs"] for s in settings for r in s["runs"]),
        "never_worse_than_run_now_with_the_guard": all(r["savings_vs_run_now"] >= 0 for _, r in guarded),
        "worst_guarded_savings": min(r["savings_vs_run_now"] for _, r in guarded),
        "noisy_0.05_share_of_bound": canonical["noisy:0.05"]["share_of_bound"],
        "noisy_0.05_at_least_80_percent": canonical["noisy:0.05"]["share_of_bound"] >= 0.8,
        "past_share_of_bound": canonical["past"]["share_of_bound"],
        "naive_without_guard_loses_somewhere": any(
            r["savings_vs_run_now"] < 0 for s in settings for r in s["runs"] if r["forecast"] == "naive"
            and not r["guard"]),
    }
    return {"machine": describe(), "goals": goals, "settings": settings}


def main() -> None:
    write_results("carbon_backtest", measure())


if __name__ == "__main__":
    main()
