"""Shadow searches of live deferral: the search a deferred action would get, made whether one arrives or not.

What it does: :func:`shadow_search` runs :func:`~mape.plan.scheduling.deferral.choose_start`
on the forecast of the moment, for one kind of search (:func:`search_key`:
objective, duration, how long after the decision the window opens, and how
long it stays open), and keeps what scoring it later needs: the forecast
means per series of starting at ``earliest`` and of the chosen window, and
each series' ``scale`` (the objective's weight per unit of the series: the
weight alone for one series, the weight over the series' forecast mean over
the span searched for a mix, as the search normalised it). So the predicted
gain is ``sum(scale * (run_now - chosen))``, and :func:`realised_gain` is the
same sum on the actual means, once both windows have passed. A search that
predicted no gain realised none (it would not have deferred), as in the
backtest.

:func:`observed_mean` is the mean of a step function given by observations
(the Monitor's ``carbon.intensity`` every tick), or ``None`` when they do not
cover the window: no observation in force at its start, or a gap longer than
``max_gap``.

Pure: no knowledge base. Who calls it: :class:`mape.plan.forecast_guard.ForecastGuard`,
which stores the shadows and scores them; tests.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from mape._util.timeutil import format_duration
from mape.plan.scheduling.deferral import Forecast, choose_start, forecast_steps
from mape.plan.scheduling.window import Steps

__all__ = ["Actual", "Shadow", "observed_mean", "realised_gain", "search_key", "shadow_search"]

#: ``actual(series, start, end)``: the actual mean of ``series`` over ``[start, end)``, ``None`` when unknown.
Actual = Callable[[str, datetime, datetime], float | None]


def search_key(weights: Mapping[str, float], duration: timedelta, lead: timedelta, slack: timedelta) -> str:
    """The kind of a search: objective, duration, window opening ``lead`` after the decision, open for ``slack``.

    Searches of one kind share their evidence.

    >>> search_key({"carbon": 1.0}, timedelta(hours=1), timedelta(0), timedelta(hours=12))
    'carbon 1h +0s..12h'
    >>> search_key({"carbon": 0.7, "price": 0.3, "water": 0}, 2 * timedelta(hours=1), timedelta(hours=1),
    ...            timedelta(hours=8))
    'carbon=0.7,price=0.3 2h +1h..8h'
    """
    used = {name: weight for name, weight in sorted(weights.items()) if weight > 0}
    objective = next(iter(used)) if len(used) == 1 and next(iter(used.values())) == 1 else ",".join(
        f"{name}={weight:g}" for name, weight in used.items())
    return f"{objective} {format_duration(duration)} +{format_duration(lead)}..{format_duration(slack)}"


@dataclass(frozen=True)
class Shadow:
    """One shadow search: what the forecast of ``issued_at`` promised (see the module).

    Attributes
    ----------
    key : str
        The kind of search (:func:`search_key`).
    issued_at : datetime
        When it was made (the tick whose forecast was searched).
    earliest, latest_start : datetime
        The span searched for a start.
    duration : timedelta
        The job's duration.
    weights : dict of str to float
        The objective.
    chosen_start : datetime
        The best start on the forecast.
    predicted_gain : float
        The forecast objective of starting at ``earliest`` minus that of the
        chosen window (gCO2/kWh for carbon alone).
    run_now, chosen, scale : dict of str to float
        Per series: the forecast means of the two windows, and the scale.
    """

    key: str
    issued_at: datetime
    earliest: datetime
    latest_start: datetime
    duration: timedelta
    weights: dict[str, float]
    chosen_start: datetime
    predicted_gain: float
    run_now: dict[str, float] = field(default_factory=dict)
    chosen: dict[str, float] = field(default_factory=dict)
    scale: dict[str, float] = field(default_factory=dict)

    @property
    def due_at(self) -> datetime:
        """When both windows have passed: from then on it can be scored."""
        return max(self.earliest, self.chosen_start) + self.duration

    def __str__(self) -> str:
        return (f"shadow search {self.key} at {self.issued_at.isoformat()} (start {self.chosen_start.isoformat()}, "
                f"predicted gain {self.predicted_gain:.4g})")


def shadow_search(*, key: str, issued_at: datetime, earliest: datetime, latest_start: datetime,
                  duration: timedelta, weights: Mapping[str, float], forecast: Forecast,
                  cache: dict[Any, Steps | None] | None = None) -> Shadow | None:
    """The search a deferred action would get now, or ``None`` when no forecast covers it.

    Examples
    --------
    >>> from datetime import timezone
    >>> t0 = datetime(2026, 3, 10, tzinfo=timezone.utc)
    >>> hourly = lambda series, start, end: [(t0 + timedelta(hours=h), v) for h, v in enumerate([300, 100, 200])]
    >>> shadow = shadow_search(key="k", issued_at=t0, earliest=t0, latest_start=t0 + timedelta(hours=2),
    ...                        duration=timedelta(hours=1), weights={"carbon": 1.0}, forecast=hourly)
    >>> shadow.chosen_start.hour, shadow.predicted_gain, shadow.scale, shadow.due_at.hour
    (1, 200.0, {'carbon': 1.0}, 2)
    """
    found = choose_start(earliest=earliest, latest_start=latest_start, duration=duration, weights=weights,
                         forecast=forecast, cache=cache)
    window = found.window
    if window is None:
        return None
    scale: dict[str, float] = {}
    for name in window.means:
        if len(window.means) == 1:
            scale[name] = float(weights[name])
            continue
        steps = forecast_steps(forecast, name, earliest, latest_start + duration, cache)
        assert steps is not None  # the search above had it
        first, last = window.earliest.timestamp(), (window.latest_start + duration).timestamp()
        level = float(steps.integral(first, last)) / (last - first)
        scale[name] = float(weights[name]) / (level if level > 0 else 1.0)
    return Shadow(key=key, issued_at=issued_at, earliest=earliest, latest_start=latest_start, duration=duration,
                  weights=dict(weights), chosen_start=window.start, predicted_gain=window.gain,
                  run_now=dict(window.run_now_means), chosen=dict(window.means), scale=scale)


def realised_gain(*, predicted_gain: float, earliest: datetime, chosen_start: datetime, duration: timedelta,
                  scale: Mapping[str, float], actual: Actual) -> tuple[float | None, dict[str, dict[str, float]]]:
    """The realised gain of a shadow, and the actual means per window and series it rests on.

    ``(None, means so far)`` when an actual mean is unknown. A shadow that
    predicted no gain realised none, and needs no actuals.

    >>> from datetime import timezone
    >>> t0 = datetime(2026, 3, 10, tzinfo=timezone.utc)
    >>> actual = lambda series, start, end: {0: 280.0, 1: 150.0}[start.hour]
    >>> realised_gain(predicted_gain=200.0, earliest=t0, chosen_start=t0 + timedelta(hours=1),
    ...               duration=timedelta(hours=1), scale={"carbon": 1.0}, actual=actual)
    (130.0, {'run_now': {'carbon': 280.0}, 'chosen': {'carbon': 150.0}})
    """
    means: dict[str, dict[str, float]] = {"run_now": {}, "chosen": {}}
    if predicted_gain <= 0:
        return 0.0, means
    gain = 0.0
    for name, factor in scale.items():
        for which, start in (("run_now", earliest), ("chosen", chosen_start)):
            value = actual(name, start, start + duration)
            if value is None or not math.isfinite(value):
                return None, means
            means[which][name] = value
        gain += factor * (means["run_now"][name] - means["chosen"][name])
    return gain, means


def observed_mean(points: Sequence[tuple[datetime, float]], start: datetime, end: datetime, *,
                  max_gap: timedelta) -> float | None:
    """The time-weighted mean over ``[start, end)`` of observations, each holding until the next (see the module).

    ``points`` are sorted by time, one per time, finite.

    >>> from datetime import timezone
    >>> t = lambda minutes: datetime(2026, 3, 10, tzinfo=timezone.utc) + timedelta(minutes=minutes)
    >>> seen = [(t(0), 300.0), (t(30), 100.0), (t(60), 500.0)]
    >>> observed_mean(seen, t(0), t(60), max_gap=timedelta(hours=1))
    200.0
    >>> observed_mean(seen, t(-10), t(50), max_gap=timedelta(hours=1)) is None  # nothing in force at the start
    True
    """
    times = [moment for moment, _ in points]
    first = bisect.bisect_right(times, start) - 1
    stop = bisect.bisect_left(times, end)
    if first < 0 or stop <= first:
        return None
    used = list(points[first:stop])
    edges = [*(moment for moment, _ in used), end]
    if any(b - a > max_gap for a, b in zip(edges, edges[1:])):
        return None
    return Steps.from_points(used, end=end).mean(start, end)
