"""Replay a year of carbon intensity: how much would carbon-aware deferral have saved, with a given forecaster?

What it does: :func:`backtest` lets a job arrive every ``every`` (after a
warm-up); each may start up to ``slack`` after it arrives and runs for
``duration``. The scheduler plans on a forecast and the emissions are realised
on the actual series:

1. At arrival, the forecast issued then is searched for the best start in
   ``[arrival, arrival + slack]`` (:func:`~mape.plan.scheduling.window.best_window`).
2. **The guard.** The job is deferred only when the predicted gain (the
   forecast mean intensity of running at once minus that of the best window)
   exceeds the forecaster's **recent error** for such a prediction. That error
   is measured on *shadow decisions*: the same search, made every ``replan``
   (default 1 h) whether a job arrives or not, and scored once their windows
   have passed, so it is known at decision time from the past alone. Of the
   shadows of the last ``lookback`` (28 days) issued at the same time of day
   (within 30 minutes), the 15 whose predicted gains are nearest the job's give
   the expected realised gain (their mean, less one standard error); the
   recent error is the predicted gain minus that. So a forecaster whose
   predicted gains of that size have not paid off lately, at that hour, does
   not defer; one whose gains have come true defers as much as before. A
   shadow that predicted no gain counts as realising none, so tiny predicted
   gains are held back where most neighbours predicted nothing.
3. **Re-planning.** Until it starts, a deferred job is planned again every
   ``replan`` on the forecast issued then; it moves when the new best start
   beats the current one, on that forecast, by more than the recent error.
4. **The deadline.** No start is ever considered after ``arrival + slack``: a
   job still waiting then starts then, whatever the forecast says.

Each job records the forecast emissions of running at once and of the chosen
window, the realised emissions of the chosen window and of running at once, and
the best realisable (perfect foresight). Totals are reported as fractions
saved against running at once: ``savings_vs_run_now`` (realised) and
``savings_bound`` (perfect foresight); ``predicted_savings`` is what the
forecasts promised, so the gap between promise and result is visible.

Jobs are billed ``power_kw`` (default 1 kW) for their duration; savings are
fractions and do not depend on it.

Who calls it: ``mape carbon backtest``, ``benchmarks/carbon_backtest.py`` and
the tests.
"""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import numpy as np

from mape._util.timeutil import format_duration
from mape.errors import ScheduleError
from mape.plan.scheduling.forecast import Forecaster, make_forecaster
from mape.plan.scheduling.recent_error import MATCH, clock_seconds, recent_error
from mape.plan.scheduling.trace import Trace
from mape.plan.scheduling.window import Steps, Window, best_window

__all__ = ["BacktestResult", "JobRecord", "backtest"]


@dataclass(frozen=True)
class JobRecord:
    """One job of a backtest: when it arrived and started, and its emissions in grams.

    ``*_forecast_g`` are what the forecast issued at arrival predicted (for
    running at once, and for the start chosen at arrival); ``realised_g`` is
    what the start finally taken emitted on the actual series; ``run_now_g``
    and ``best_g`` are running at once and the best start in hindsight.
    """

    arrival: datetime
    latest_start: datetime
    start: datetime
    deferred: bool
    moves: int
    recent_error: float
    run_now_forecast_g: float
    chosen_forecast_g: float
    realised_g: float
    run_now_g: float
    best_g: float

    @property
    def deadline_met(self) -> bool:
        return self.start <= self.latest_start

    def as_dict(self) -> dict[str, Any]:
        return {"arrival": self.arrival.isoformat(), "latest_start": self.latest_start.isoformat(),
                "start": self.start.isoformat(), "deferred": self.deferred, "moves": self.moves,
                "recent_error_g_per_kwh": round(self.recent_error, 3),
                **{key: round(getattr(self, key), 3) for key in (
                    "run_now_forecast_g", "chosen_forecast_g", "realised_g", "run_now_g", "best_g")}}


@dataclass
class BacktestResult:
    """The totals of a backtest (see the module); ``as_dict`` is what ``mape carbon backtest`` prints."""

    trace: str
    forecast: str
    duration: timedelta
    slack: timedelta
    every: timedelta
    guard: bool
    jobs: list[JobRecord] = field(default_factory=list)
    forecast_mae: float = math.nan

    @staticmethod
    def _saving(spent: float, baseline: float) -> float:
        return 1.0 - spent / baseline if baseline > 0 else 0.0

    @property
    def savings_vs_run_now(self) -> float:
        return self._saving(sum(j.realised_g for j in self.jobs), sum(j.run_now_g for j in self.jobs))

    @property
    def savings_bound(self) -> float:
        return self._saving(sum(j.best_g for j in self.jobs), sum(j.run_now_g for j in self.jobs))

    @property
    def predicted_savings(self) -> float:
        return self._saving(sum(j.chosen_forecast_g for j in self.jobs),
                            sum(j.run_now_forecast_g for j in self.jobs))

    @property
    def share_of_bound(self) -> float:
        bound = self.savings_bound
        return self.savings_vs_run_now / bound if bound > 0 else 0.0

    def as_dict(self, *, jobs: bool = False) -> dict[str, Any]:
        n = len(self.jobs)
        out: dict[str, Any] = {
            "trace": self.trace, "forecast": self.forecast, "guard": self.guard,
            "duration": format_duration(self.duration), "slack": format_duration(self.slack),
            "every": format_duration(self.every),
            "first_arrival": self.jobs[0].arrival.isoformat() if n else None,
            "jobs": n, "deadlines_met": sum(j.deadline_met for j in self.jobs),
            "deferred": sum(j.deferred for j in self.jobs), "moves": sum(j.moves for j in self.jobs),
            "savings_vs_run_now": round(self.savings_vs_run_now, 6), "savings_bound": round(self.savings_bound, 6),
            "share_of_bound": round(self.share_of_bound, 6), "predicted_savings": round(self.predicted_savings, 6),
            "jobs_worse_than_run_now": sum(j.realised_g > j.run_now_g + 1e-9 for j in self.jobs),
            "emissions_kg": {
                "run_now": round(sum(j.run_now_g for j in self.jobs) / 1000, 4),
                "realised": round(sum(j.realised_g for j in self.jobs) / 1000, 4),
                "best": round(sum(j.best_g for j in self.jobs) / 1000, 4),
                "run_now_forecast": round(sum(j.run_now_forecast_g for j in self.jobs) / 1000, 4),
                "chosen_forecast": round(sum(j.chosen_forecast_g for j in self.jobs) / 1000, 4),
            },
            "forecast_mae_g_per_kwh": None if math.isnan(self.forecast_mae) else round(self.forecast_mae, 3),
            "mean_recent_error_g_per_kwh": round(float(np.mean([j.recent_error for j in self.jobs
                                                                if math.isfinite(j.recent_error)] or [0.0])), 3),
        }
        if jobs:
            out["job_records"] = [j.as_dict() for j in self.jobs]
        return out


def backtest(trace: Trace, *, duration: timedelta, slack: timedelta, every: timedelta,
             forecast: str | Forecaster = "past", guard: bool = True, replan: timedelta = timedelta(hours=1),
             lookback: timedelta = timedelta(days=28), warmup: timedelta = timedelta(days=14),
             offset: timedelta = timedelta(0), power_kw: float = 1.0, seed: int | None = None) -> BacktestResult:
    """Replay ``trace`` with jobs every ``every`` that may wait ``slack`` (see the module).

    Parameters
    ----------
    trace : Trace
        The actual series (gCO2/kWh).
    duration : timedelta
        How long each job runs.
    slack : timedelta
        How long a job may wait: it starts by its arrival plus this.
    every : timedelta
        Time between arrivals; a multiple of the trace's step.
    forecast : str or Forecaster
        ``past`` (default), ``perfect``, ``noisy:SIGMA`` or ``naive[:LAG]``
        (:func:`~mape.plan.scheduling.forecast.make_forecaster`), or an instance.
    guard : bool
        Defer only when the predicted gain exceeds the forecaster's recent
        error (default); ``False`` defers whenever the forecast predicts a gain.
    replan : timedelta
        How often a waiting job is planned again, and the cadence of the shadow
        decisions the recent error is measured on; a multiple of the step.
    lookback : timedelta
        How far back the recent error looks (default 28 days).
    warmup : timedelta
        No job arrives in the trace's first ``warmup`` (default 14 days: the
        forecasters' history, and the first shadow decisions).
    offset : timedelta
        The first job arrives this long after the warm-up (e.g. ``12h`` for
        jobs at noon); a multiple of the step.
    power_kw : float
        The jobs' power draw.
    seed : int, optional
        Seed of a ``noisy`` forecaster named by a string.

    Raises
    ------
    ScheduleError
        When a duration is not positive, ``every``, ``replan`` or ``offset``
        is not a multiple of the step, or the trace is too short for one job.
    """
    step = trace.step
    for name, value in (("duration", duration), ("every", every), ("replan", replan)):
        if value <= timedelta(0):
            raise ScheduleError(f"{name} must be longer than 0, got {format_duration(value)}")
    for name, value in (("slack", slack), ("warmup", warmup), ("offset", offset)):
        if value < timedelta(0):
            raise ScheduleError(f"{name} must not be negative, got {format_duration(value)}")
    for name, value in (("every", every), ("replan", replan), ("offset", offset)):
        if value % step:
            raise ScheduleError(f"{name} ({format_duration(value)}) must be a multiple of the trace's resolution "
                                f"({format_duration(step)})")
    forecaster = forecast if isinstance(forecast, Forecaster) else (
        make_forecaster(forecast, step=step) if seed is None else make_forecaster(forecast, step=step, seed=seed))
    result = BacktestResult(trace=trace.source, forecast=forecaster.name, duration=duration, slack=slack,
                            every=every, guard=guard)
    energy_kwh = power_kw * duration / timedelta(hours=1)
    horizon = math.ceil((slack + duration) / step) + 1
    first = math.ceil(warmup / step) + int(offset / step)
    last = trace.index(trace.end - slack - duration)  # the last arrival whose whole span is in the trace
    if first > last:
        raise ScheduleError(f"{trace.source} spans {format_duration(trace.end - trace.start)}: too short for a "
                            f"{format_duration(warmup + offset)} warm-up and one {format_duration(duration)} job "
                            f"with {format_duration(slack)} of slack")
    actual = trace.steps()
    replay = _Replay(trace, forecaster, actual, duration, slack, horizon)
    cadence = int(replan / step)
    shadows = _Shadows(replay, start=0, cadence=cadence, lookback=lookback)
    errors: list[float] = []
    for arrival_index in range(first, last + 1, int(every / step)):
        arrival = trace.time(arrival_index)
        latest = arrival + slack
        window = replay.plan(arrival_index, arrival, latest)
        error = shadows.error(arrival, window.gain) if guard else 0.0
        deferred = window.start > arrival and window.gain > error
        choice = window.start if deferred else arrival
        moves = 0
        at_index = arrival_index + cadence
        while deferred and trace.time(at_index) < choice:
            now = trace.time(at_index)
            again = replay.plan(at_index, now, latest)
            improvement = replay.forecast_mean(at_index, choice) - again.score
            if again.start != choice and improvement > (shadows.error(now, improvement) if guard else 0.0):
                choice, moves = again.start, moves + 1
            at_index += cadence
        realised = actual.mean(choice, choice + duration)
        best = best_window(actual, duration=duration, earliest=arrival, latest_start=latest)
        predicted = replay.forecast(arrival_index)
        errors.append(float(np.mean(np.abs(predicted - trace.values[arrival_index:arrival_index + len(predicted)]))))
        result.jobs.append(JobRecord(
            arrival=arrival, latest_start=latest, start=choice, deferred=choice > arrival, moves=moves,
            recent_error=error, run_now_forecast_g=window.run_now_score * energy_kwh,
            chosen_forecast_g=(window.score if deferred else window.run_now_score) * energy_kwh,
            realised_g=realised * energy_kwh, run_now_g=best.run_now_score * energy_kwh,
            best_g=best.score * energy_kwh))
    result.forecast_mae = float(np.mean(errors)) if errors else math.nan
    return result


class _Replay:
    """Forecasts issued at grid indices (each computed once) and the window searches over them."""

    def __init__(self, trace: Trace, forecaster: Forecaster, actual: Steps, duration: timedelta, slack: timedelta,
                 horizon: int) -> None:
        self.trace, self.forecaster, self.actual = trace, forecaster, actual
        self.duration, self.slack, self.horizon = duration, slack, horizon
        self._forecasts: dict[int, np.ndarray] = {}
        self._steps: dict[int, Steps] = {}

    def forecast(self, index: int) -> np.ndarray:
        cached = self._forecasts.get(index)
        if cached is None:
            length = min(self.horizon, len(self.trace) - index)
            cached = self._forecasts[index] = self.forecaster.predict(self.trace.values, index, length)
        return cached

    def steps(self, index: int) -> Steps:
        cached = self._steps.get(index)
        if cached is None:
            cached = self._steps[index] = Steps.regular(self.trace.time(index), self.trace.step, self.forecast(index))
        return cached

    def plan(self, index: int, earliest: datetime, latest: datetime) -> Window:
        """The best window on the forecast issued at ``index`` (``earliest`` is that step's start)."""
        step = self.trace.step
        if self.duration % step or (latest - earliest) % step:
            return best_window(self.steps(index), duration=self.duration, earliest=earliest, latest_start=latest)
        # on the grid, the candidates are the steps themselves: the same search, by a moving average
        width, count = self.duration // step, (latest - earliest) // step + 1
        forecast = self.forecast(index)
        count = min(count, len(forecast) - width + 1)
        if count < 1:
            return best_window(self.steps(index), duration=self.duration, earliest=earliest, latest_start=latest)
        cumulative = np.concatenate([[0.0], np.cumsum(forecast[:count + width - 1])])
        means = (cumulative[width:] - cumulative[:-width]) / width
        lowest = float(means.min())
        chosen = int(np.argmax(means <= lowest + 1e-9 * max(1.0, abs(lowest))))
        start = earliest + chosen * step
        return Window(start=start, end=start + self.duration, earliest=earliest,
                      latest_start=earliest + (count - 1) * step, score=float(means[chosen]),
                      run_now_score=float(means[0]), means={"carbon": float(means[chosen])},
                      run_now_means={"carbon": float(means[0])}, candidates=count,
                      truncated=earliest + (count - 1) * step < latest)

    def forecast_mean(self, index: int, start: datetime) -> float:
        step = self.trace.step
        if self.duration % step == timedelta(0) and (start - self.trace.time(index)) % step == timedelta(0):
            offset, width = (start - self.trace.time(index)) // step, self.duration // step
            return float(np.mean(self.forecast(index)[offset:offset + width]))
        return self.steps(index).mean(start, start + self.duration)


class _Shadows:
    """The forecaster's recent error: decisions made every ``cadence`` steps, scored once their windows passed.

    A shadow decision is the scheduler's search on the forecast issued at its
    time, as if a job had arrived; once its latest window has passed, its
    realised gain is known (0 if it predicted no gain and so did not defer).
    :meth:`error` compares a predicted gain with the realised gains of the
    recent shadows (:func:`~mape.plan.scheduling.recent_error.recent_error`:
    the nearest by predicted gain of those issued within ``MATCH`` of the same
    time of day; the same hour may behave quite unlike its neighbours: at the
    bottom of the solar dip, waiting is rarely worth it).
    """

    def __init__(self, replay: _Replay, *, start: int, cadence: int, lookback: timedelta) -> None:
        self.replay, self.cadence, self.lookback = replay, cadence, lookback
        self.match = max(MATCH, cadence * replay.trace.step / 2).total_seconds()
        self.next = start
        self.issued: list[datetime] = []
        self.clock: list[float] = []  # seconds since midnight UTC of each shadow's issue time
        self.predicted: list[float] = []
        self.realised: list[float] = []

    def _advance(self, until: datetime) -> None:
        trace, replay = self.replay.trace, self.replay
        while self.next < len(trace):
            issued = trace.time(self.next)
            if issued + replay.slack + replay.duration > min(until, trace.end):
                return
            window = replay.plan(self.next, issued, issued + replay.slack)
            self.issued.append(issued)
            self.clock.append(clock_seconds(issued))
            self.predicted.append(window.gain)
            self.realised.append(replay.actual.mean(issued, issued + replay.duration)
                                 - replay.actual.mean(window.start, window.end) if window.gain > 0 else 0.0)
            self.next += self.cadence

    def error(self, at: datetime, gain: float) -> float:
        """By how much a predicted ``gain`` at ``at`` overstates the realised one, from the recent shadows.

        ``inf`` when fewer than
        :data:`~mape.plan.scheduling.recent_error.MIN_SHADOWS` shadows are
        known (no evidence, no deferral).
        """
        self._advance(at)
        first = bisect.bisect_left(self.issued, at - self.lookback)
        return recent_error(gain, clock_seconds(at), clocks=self.clock[first:], predicted=self.predicted[first:],
                            realised=self.realised[first:], match=self.match).error
