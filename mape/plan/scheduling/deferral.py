"""The start of a deferred action, chosen on a live forecast: what the planner asks when a policy has ``defer``.

What it does: :func:`choose_start` searches the forecast over ``[earliest,
latest_start]`` for the window of the action's expected ``duration`` with the
lowest forecast carbon intensity (or price, or a weighted mix: the policy's
``defer.objective``), and says why it chose what it chose. Without a forecast,
or when the forecast does not cover the run-now window, or when the predicted
saving is below the policy's ``defer.min_saving``, the start is ``earliest``
(the behaviour without forecasts). The start is never after ``latest_start``:
a deferred action runs at its deadline whatever the forecast says.

**The guard** (``guard``, a policy's ``defer.guard``): with ``recent_error``
or ``strict``, the action is deferred only when the predicted gain (the
forecast objective of starting at ``earliest`` minus that of the chosen
window) exceeds the forecaster's recent error for such a prediction
(:class:`~mape.plan.scheduling.recent_error.Evidence`: shadow searches the
planner recorded and scored once their windows passed). Without enough scored
searches, ``strict`` starts at ``earliest`` (no evidence, no deferral) and
``recent_error`` trusts the forecast alone, saying so; ``none`` never
consults the evidence. The record holds the error, the expected realised gain
and the number of scored searches under ``guard``.

:func:`reconsider` is the same search again for a run still waiting: on a
fresh forecast, from now to the same deadline. The planner moves the run only
when the fresh forecast promises at least ``defer.replan_saving`` less than
the start it had.

The forecast is a function ``forecast(series, start, end)`` returning the
``(time, value)`` steps of ``series`` (``carbon`` in gCO2/kWh, ``price``) over
``[start, end)``, the first one in force at ``start``, or ``[]`` when it is not
known. The last step lasts one typical step (the forecast's horizon ends
there; later starts are not considered), a lone step the whole window. The
controller builds it from the configured carbon intensity provider
(:meth:`mape.monitor.carbon.provider.IntensityProvider.forecast`); this module
never imports the Monitor stage.

Who calls it: :class:`mape.plan.planner.Planner`, for acting decisions of a
policy with ``defer`` and for deferred runs still waiting.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal

from mape._util.timeutil import format_duration
from mape.errors import ScheduleError
from mape.plan.scheduling.recent_error import MIN_SHADOWS, Evidence, RecentError
from mape.plan.scheduling.window import Steps, Window, best_window, score_starts

__all__ = ["Forecast", "Guard", "Schedule", "choose_start", "forecast_steps", "reconsider"]

#: ``forecast(series, start, end)``: the steps of ``series`` over ``[start, end)``, ``[]`` when unknown.
Forecast = Callable[[str, datetime, datetime], Sequence[tuple[datetime, float]]]
#: How a deferral is guarded: the recent error once known, the recent error or no deferral, or not at all.
Guard = Literal["recent_error", "strict", "none"]


@dataclass(frozen=True)
class Schedule:
    """A chosen start and the record of how it was chosen (stored as the decision's ``evidence.schedule``).

    Attributes
    ----------
    start : datetime
        When the action may start (the run's ``scheduled_for``).
    reason : str
        One sentence: why this start.
    window : Window, optional
        The search's result, when a forecast was searched.
    record : dict
        JSON-ready: objective, duration, earliest, latest start, start, reason
        and, with a forecast, the forecast means of running at ``earliest``
        (``run_now``) and of the chosen window (``chosen``), per series.
    """

    start: datetime
    reason: str
    window: Window | None = None
    record: dict[str, Any] = field(default_factory=dict)

    @property
    def predicted_saving(self) -> float:
        return self.window.saving if self.window is not None else 0.0


def forecast_steps(forecast: Forecast, series: str, start: datetime, end: datetime,
                   cache: dict[Any, Steps | None] | None = None) -> Steps | None:
    """The steps of ``series`` over ``[start, end)`` as a :class:`Steps`, or ``None`` when unknown or failing.

    ``cache`` holds the answers already fetched in a planning pass, by series and span.
    """
    key = (series, start, end)
    if cache is not None and key in cache:
        return cache[key]
    try:
        points = sorted(forecast(series, start, end))
        steps = Steps.from_points(points, end=_last_end(points, end)) if points and points[-1][0] < end else None
    except Exception:  # noqa: BLE001 - a forecast that fails is no forecast; the action starts at earliest
        steps = None
    if cache is not None:
        cache[key] = steps
    return steps


def _last_end(points: Sequence[tuple[datetime, float]], end: datetime) -> datetime:
    """Where the last step ends: one typical step after it (a forecast's horizon), or ``end`` for a lone point."""
    if len(points) < 2:
        return end  # a constant, e.g. codecarbon's annual figure: it holds over the whole window
    gaps = sorted(b[0] - a[0] for a, b in zip(points, points[1:]))
    return min(end, points[-1][0] + gaps[len(gaps) // 2])


def choose_start(*, earliest: datetime, latest_start: datetime, duration: timedelta,
                 weights: Mapping[str, float], forecast: Forecast | None, min_saving: float = 0.0,
                 cache: dict[Any, Steps | None] | None = None, guard: Guard = "none",
                 evidence: Evidence | None = None) -> Schedule:
    """The start in ``[earliest, latest_start]`` with the lowest forecast objective (see the module).

    Parameters
    ----------
    earliest, latest_start : datetime
        The decision's ``not_before`` and ``deadline``.
    duration : timedelta
        How long the action is expected to run.
    weights : mapping of str to float
        The objective: ``{"carbon": 1.0}``, ``{"price": 1.0}`` or a mix.
    forecast : callable, optional
        The forecast (see the module); ``None``: start at ``earliest``.
    min_saving : float
        Start at ``earliest`` unless the chosen window's forecast is at least
        this fraction below that of starting at ``earliest``.
    cache : dict, optional
        Forecasts already fetched in this planning pass, by series and span.
    guard : {"none", "recent_error", "strict"}
        Whether a deferral must also beat the forecaster's recent error (see
        the module); ``none`` (the default here) does not look.
    evidence : Evidence, optional
        The scored shadow searches of this kind of search; ``None``: none yet.

    Examples
    --------
    >>> from datetime import timezone
    >>> t0 = datetime(2026, 3, 10, tzinfo=timezone.utc)
    >>> hourly = lambda series, start, end: [(t0 + timedelta(hours=h), v) for h, v in enumerate([300, 100, 200])]
    >>> chosen = choose_start(earliest=t0, latest_start=t0 + timedelta(hours=2), duration=timedelta(hours=1),
    ...                       weights={"carbon": 1.0}, forecast=hourly)
    >>> chosen.start.hour, chosen.record["forecast"]["run_now"], chosen.record["forecast"]["chosen"]
    (1, {'carbon': 300.0}, {'carbon': 100.0})
    >>> choose_start(earliest=t0, latest_start=t0, duration=timedelta(hours=1), weights={"carbon": 1.0},
    ...              forecast=None).reason
    'no forecast is configured: start at the earliest time'

    Twelve earlier searches at midnight that predicted 200 g of gain and lost 20 g instead: waiting does not pay.

    >>> past = Evidence.from_rows((t0 - timedelta(days=d), 200.0, -20.0) for d in range(1, 13))
    >>> guarded = choose_start(earliest=t0, latest_start=t0 + timedelta(hours=2), duration=timedelta(hours=1),
    ...                        weights={"carbon": 1.0}, forecast=hourly, guard="recent_error", evidence=past)
    >>> guarded.start.hour, guarded.record["guard"]["recent_error"], guarded.record["guard"]["scored"]
    (0, 220.0, 12)
    """
    record: dict[str, Any] = {"objective": dict(weights), "duration": format_duration(duration),
                              "earliest": earliest.isoformat(), "latest_start": latest_start.isoformat()}

    def done(start: datetime, reason: str, window: Window | None = None) -> Schedule:
        record.update(start=start.isoformat(), reason=reason)
        return Schedule(start=start, reason=reason, window=window, record=record)

    if forecast is None:
        return done(earliest, "no forecast is configured: start at the earliest time")
    series: dict[str, Steps] = {}
    for name, weight in weights.items():
        if weight <= 0:
            continue
        steps = forecast_steps(forecast, name, earliest, latest_start + duration, cache)
        if steps is None:
            return done(earliest, f"no {name} forecast is known: start at the earliest time")
        series[name] = steps
    try:
        window = best_window(series, duration=duration, earliest=earliest, latest_start=latest_start,
                             weights={name: weights[name] for name in series})
    except ScheduleError as exc:
        return done(earliest, f"{exc}: start at the earliest time")
    record["forecast"] = {"run_now": _rounded(window.run_now_means), "chosen": _rounded(window.means),
                          "saving": round(window.saving, 6), "candidates": window.candidates,
                          "truncated": window.truncated}
    if window.start == earliest:
        return done(earliest, "the forecast is lowest at the earliest time", window)
    if window.saving < min_saving:
        return done(earliest, f"the forecast saving ({window.saving:.1%}) is below min_saving ({min_saving:.1%}): "
                              "start at the earliest time", window)
    note = ""
    if guard != "none":
        found = _guarded(record, guard, evidence, earliest, window.gain)
        if found.known and window.gain <= found.error:
            return done(earliest, f"the predicted gain ({window.gain:.4g}) does not exceed the forecaster's recent "
                                  f"error ({_searches(found)}): start at the earliest time", window)
        if not found.known and guard == "strict":
            return done(earliest, f"no evidence of the forecaster's recent error yet ({_searches(found)}): start at "
                                  "the earliest time", window)
        note = "; " + _guard_note(found, window.gain)
    return done(window.start, f"the forecast is lowest from {window.start.isoformat()} "
                              f"({window.saving:.1%} below starting at the earliest time{note})", window)


def reconsider(*, planned: datetime, now: datetime, latest_start: datetime, duration: timedelta,
               weights: Mapping[str, float], forecast: Forecast, replan_saving: float,
               cache: dict[Any, Steps | None] | None = None, guard: Guard = "none",
               evidence: Evidence | None = None) -> Schedule | None:
    """A better start for a run planned for ``planned`` and still waiting at ``now``, or ``None`` to keep it.

    The fresh forecast is searched over ``[now, latest_start]``; the run moves
    when the best start's forecast is at least ``replan_saving`` below the
    planned start's on the same forecast and, with a ``guard``, when that
    improvement also exceeds the forecaster's recent error (``strict``: and
    only once it is known), as :func:`choose_start` judges a deferral. The
    record gains ``planned`` (and ``guard``).
    """
    if planned <= now or planned > latest_start:
        return None
    fresh = choose_start(earliest=now, latest_start=latest_start, duration=duration, weights=weights,
                         forecast=forecast, cache=cache)
    window = fresh.window
    if window is None or window.start == planned:
        return None
    series = {name: forecast_steps(forecast, name, now, latest_start + duration, cache) for name in window.means}
    if any(steps is None or not steps.covers(planned, planned + duration) for steps in series.values()):
        return None
    planned_score, = score_starts(window, series, [planned], weights)  # type: ignore[arg-type]
    if planned_score <= 0 or (planned_score - window.score) / planned_score < replan_saving:
        return None
    saving = 1 - window.score / planned_score
    record = dict(fresh.record, planned=planned.isoformat())
    note = ""
    if guard != "none":
        improvement = planned_score - window.score
        found = _guarded(record, guard, evidence, now, improvement)
        if (found.known and improvement <= found.error) or (not found.known and guard == "strict"):
            return None
        note = f" ({_guard_note(found, improvement)})"
    record["reason"] = (f"the forecast changed: {window.start.isoformat()} is now {saving:.1%} below the planned "
                        f"{planned.isoformat()}{note}")
    return Schedule(start=window.start, reason=record["reason"], window=window, record=record)


def _guarded(record: dict[str, Any], guard: Guard, evidence: Evidence | None, at: datetime,
             gain: float) -> RecentError:
    """The recent error of a predicted ``gain`` at ``at`` (unknown without evidence), noted in ``record``."""
    found = evidence.error(at, gain) if evidence is not None else RecentError(math.inf, 0)
    record["guard"] = {"kind": guard, "predicted_gain": round(gain, 6), **found.as_dict()}
    return found


def _searches(found: RecentError) -> str:
    if found.known:
        return f"{found.error:.4g}, from {found.scored} scored searches"
    return f"{found.scored} of {MIN_SHADOWS} scored searches"


def _guard_note(found: RecentError, gain: float) -> str:
    if found.known:
        return f"the predicted gain {gain:.4g} exceeds the recent error {_searches(found)}"
    return f"no evidence of the forecaster's recent error yet: {_searches(found)}"


def _rounded(means: Mapping[str, float]) -> dict[str, float]:
    return {name: round(value, 3) for name, value in means.items()}
