"""The best start for a job: a sliding-window search over step functions of carbon intensity or price.

What it does: :class:`Steps` is a step function of time (each value holds
from its time until the next, the last one until ``end``), the shape of every
carbon intensity and price series. :func:`best_window` chooses the start in
``[earliest, latest_start]`` that minimises the integral of a series, or of a
weighted mix of series, over ``[start, start + duration)``.

The search is exact. As a function of the start, the integral is piecewise
linear, with breakpoints where the start or the end of the job crosses a step
boundary; its minimum is therefore at a breakpoint or at an end of the
interval. The candidates are ``earliest``, ``latest_start``, every step
boundary between them and every boundary minus the duration: at a series'
resolution, and no more. Ties go to the earliest start (a tolerance of one part
in a billion keeps rounding from breaking them).

A mix of objectives is normalised before it is weighted: each series is
divided by its own mean over the span searched (``[earliest, latest_start +
duration)``), so ``{carbon: 0.7, price: 0.3}`` weighs relative changes, not
grams against euros.

Who calls it: :mod:`mape.plan.scheduling.backtest` (with forecasts),
``mape carbon plan`` and the planner's deferral (with a provider's forecast).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

import numpy as np

from mape._util.timeutil import ensure_utc, format_duration
from mape.errors import ScheduleError

__all__ = ["OBJECTIVES", "Steps", "Window", "best_window", "objective_weights", "score_starts"]

#: The series a window search can weigh: grid carbon intensity (gCO2/kWh) and electricity price.
OBJECTIVES: tuple[str, ...] = ("carbon", "price")
_TOLERANCE = 1e-9


def _seconds(moment: datetime) -> float:
    return ensure_utc(moment).timestamp()


def _moment(seconds: float) -> datetime:
    return datetime.fromtimestamp(round(seconds, 6), timezone.utc)


class Steps:
    """A step function of time: ``values[k]`` holds over ``[times[k], times[k + 1])``, the last until ``end``.

    Parameters
    ----------
    times : array of float
        Start of each step, in seconds since the epoch, strictly increasing.
    values : array of float
        The value of each step (finite).
    end : float
        End of the last step, after ``times[-1]``.

    Examples
    --------
    >>> start = datetime(2026, 3, 10, tzinfo=timezone.utc)
    >>> grid = Steps.regular(start, timedelta(hours=1), [300, 100, 200])
    >>> grid.mean(start + timedelta(minutes=30), start + timedelta(hours=1, minutes=30))
    200.0
    >>> grid.end_time.isoformat()
    '2026-03-10T03:00:00+00:00'
    """

    def __init__(self, times: Any, values: Any, end: float) -> None:
        self.times = np.asarray(times, dtype=float)
        self.values = np.asarray(values, dtype=float)
        self.end = float(end)
        if self.times.ndim != 1 or self.times.shape != self.values.shape or not len(self.times):
            raise ValueError("a step function needs as many times as values, at least one")
        if np.any(np.diff(self.times) <= 0) or self.end <= self.times[-1]:
            raise ValueError("the times of a step function must increase strictly, and end after the last")
        if not np.all(np.isfinite(self.values)):
            raise ValueError("the values of a step function must be finite")
        widths = np.diff(np.append(self.times, self.end))
        self._cumulative = np.concatenate([[0.0], np.cumsum(self.values * widths)])

    @classmethod
    def regular(cls, start: datetime, step: timedelta, values: Any) -> "Steps":
        """Values every ``step`` from ``start``, the last one holding for one step."""
        values = np.asarray(values, dtype=float)
        first, width = _seconds(start), step.total_seconds()
        return cls(first + width * np.arange(len(values)), values, first + width * len(values))

    @classmethod
    def from_points(cls, points: Iterable[tuple[datetime, float]], *, end: datetime) -> "Steps":
        """Steps from sorted ``(time, value)`` pairs (e.g. a provider's forecast), the last lasting to ``end``."""
        pairs = list(points)
        if not pairs:
            raise ValueError("a step function needs at least one point")
        return cls([_seconds(t) for t, _ in pairs], [v for _, v in pairs], _seconds(end))

    def __repr__(self) -> str:
        return f"Steps({len(self.times)} steps from {self.start.isoformat()} to {self.end_time.isoformat()})"

    @property
    def start(self) -> datetime:
        return _moment(self.times[0])

    @property
    def end_time(self) -> datetime:
        return _moment(self.end)

    def covers(self, start: datetime, end: datetime) -> bool:
        """Whether the steps span ``[start, end)``."""
        return bool(self.times[0] <= _seconds(start) and _seconds(end) <= self.end)

    def integral(self, start: Any, end: Any) -> Any:
        """The integral over ``[start, end)`` (seconds since the epoch; arrays work elementwise), inside the span."""
        return self._primitive(np.asarray(end, dtype=float)) - self._primitive(np.asarray(start, dtype=float))

    def mean(self, start: datetime, end: datetime) -> float:
        """The time-weighted mean over ``[start, end)``, which the steps must cover."""
        a, b = _seconds(start), _seconds(end)
        return float(self.integral(a, b) / (b - a))

    def _primitive(self, at: np.ndarray) -> np.ndarray:
        index = np.maximum(np.searchsorted(self.times, at, side="right") - 1, 0)
        return self._cumulative[index] + self.values[index] * (at - self.times[index])


@dataclass(frozen=True)
class Window:
    """The chosen start of a job, with the forecast it was chosen on and what running at once would give.

    Attributes
    ----------
    start, end : datetime
        The chosen window ``[start, end)``.
    earliest, latest_start : datetime
        The interval searched for the start (``latest_start`` is cut to where
        the series end, see ``truncated``).
    score : float
        The objective's mean over the window: gCO2/kWh for carbon alone, the
        series' own unit for one series, a weighted sum of relative levels (1
        is the mean of the span) for a mix.
    run_now_score : float
        The same for starting at ``earliest``.
    means, run_now_means : dict of str to float
        Each series' mean over the chosen window and over the run-now window.
    candidates : int
        How many starts were compared.
    truncated : bool
        The series ended before ``latest_start + duration``: later starts were
        not considered.
    """

    start: datetime
    end: datetime
    earliest: datetime
    latest_start: datetime
    score: float
    run_now_score: float
    means: dict[str, float] = field(default_factory=dict)
    run_now_means: dict[str, float] = field(default_factory=dict)
    candidates: int = 1
    truncated: bool = False

    def __str__(self) -> str:
        return (f"start {self.start.isoformat()} (score {self.score:.4g}; at once {self.run_now_score:.4g}, "
                f"{self.candidates} starts compared)")

    @property
    def duration(self) -> timedelta:
        return self.end - self.start

    @property
    def gain(self) -> float:
        """How much lower the score is than running at once (never negative)."""
        return self.run_now_score - self.score

    @property
    def saving(self) -> float:
        """The gain as a fraction of running at once (0 when that scores 0)."""
        return self.gain / self.run_now_score if self.run_now_score > 0 else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "start": self.start.isoformat(), "end": self.end.isoformat(),
            "duration": format_duration(self.duration), "earliest": self.earliest.isoformat(),
            "latest_start": self.latest_start.isoformat(), "deferred_by": format_duration(self.start - self.earliest),
            "score": round(self.score, 6), "run_now_score": round(self.run_now_score, 6),
            "saving": round(self.saving, 6), "means": {k: round(v, 6) for k, v in self.means.items()},
            "run_now_means": {k: round(v, 6) for k, v in self.run_now_means.items()},
            "candidates": self.candidates, "truncated": self.truncated,
        }


def objective_weights(objective: str | Mapping[str, float]) -> dict[str, float]:
    """Weights per series from a policy's or a command's objective: ``carbon``, ``price`` or a mapping.

    >>> objective_weights("price")
    {'price': 1.0}
    >>> objective_weights({"carbon": 0.7, "price": 0.3})
    {'carbon': 0.7, 'price': 0.3}
    >>> objective_weights({"carbon": -1})
    Traceback (most recent call last):
    ...
    mape.errors.ScheduleError: the weight of carbon must be a finite number >= 0, got -1
    """
    if isinstance(objective, str):
        if objective not in OBJECTIVES:
            raise ScheduleError(f"unknown objective {objective!r}; use {', '.join(OBJECTIVES)} or a mix of them")
        return {objective: 1.0}
    weights: dict[str, float] = {}
    for name, weight in objective.items():
        if name not in OBJECTIVES:
            raise ScheduleError(f"unknown objective {name!r} in the mix; use {', '.join(OBJECTIVES)}")
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not np.isfinite(weight) or weight < 0:
            raise ScheduleError(f"the weight of {name} must be a finite number >= 0, got {weight!r}")
        weights[name] = float(weight)
    if not any(weights.values()):
        raise ScheduleError("the weights of the objective must not all be 0")
    return weights


def best_window(series: Steps | Mapping[str, Steps], *, duration: timedelta, earliest: datetime,
                latest_start: datetime, weights: Mapping[str, float] | None = None) -> Window:
    """The start in ``[earliest, latest_start]`` minimising the (weighted) integral over the job's duration.

    Parameters
    ----------
    series : Steps or mapping of str to Steps
        One series (named ``carbon``), or several by name (``carbon``, ``price``).
    duration : timedelta
        How long the job runs; more than 0.
    earliest, latest_start : datetime
        The job may start at ``earliest`` and must have started by ``latest_start``.
    weights : mapping of str to float, optional
        Weight per series (default: 1 for each given); series weighted 0 are
        ignored. With more than one series weighted, each is normalised by its
        mean over the span searched.

    Raises
    ------
    ScheduleError
        When ``duration`` is not positive, ``latest_start`` is before
        ``earliest``, a weight names a series not given, or a series does not
        cover ``[earliest, earliest + duration)``.

    Examples
    --------
    Hourly intensity 300, 100, 200, 50; a two-hour job from 00:00, started by 02:00:

    >>> start = datetime(2026, 3, 10, tzinfo=timezone.utc)
    >>> grid = Steps.regular(start, timedelta(hours=1), [300, 100, 200, 50])
    >>> window = best_window(grid, duration=timedelta(hours=2), earliest=start, latest_start=start + timedelta(hours=2))
    >>> window.start.hour, window.score, window.run_now_score, window.candidates
    (2, 125.0, 200.0, 3)
    """
    if duration <= timedelta(0):
        raise ScheduleError(f"the duration of a job must be longer than 0, got {format_duration(duration)}")
    earliest, latest_start = ensure_utc(earliest), ensure_utc(latest_start)
    if latest_start < earliest:
        raise ScheduleError(f"the latest start {latest_start.isoformat()} is before the earliest "
                            f"{earliest.isoformat()}")
    named = {"carbon": series} if isinstance(series, Steps) else dict(series)
    if weights is None:
        weights = {name: 1.0 for name in named}
    unknown = sorted(set(weights) - set(named))
    if unknown:
        raise ScheduleError(f"the objective weighs {', '.join(unknown)}, but no such series was given "
                            f"(given: {', '.join(sorted(named)) or 'none'})")
    used = {name: named[name] for name, weight in weights.items() if weight > 0}
    if not used:
        raise ScheduleError("the weights of the objective must not all be 0")
    length = duration.total_seconds()
    first, last = _seconds(earliest), _seconds(latest_start)
    for name, steps in used.items():
        if not steps.covers(earliest, earliest + duration):
            raise ScheduleError(
                f"the {name} series covers {steps.start.isoformat()} to {steps.end_time.isoformat()}; it does not "
                f"cover a {format_duration(duration)} job starting at {earliest.isoformat()}")
    searched_last = min([last, *(steps.end - length for steps in used.values())])
    truncated = searched_last < last
    inner = [first, searched_last]
    for steps in used.values():
        for boundary in (steps.times, steps.times - length):
            inner.append(boundary[(boundary > first) & (boundary < searched_last)])
    candidates = np.unique(np.concatenate([np.atleast_1d(np.asarray(part, dtype=float)) for part in inner]))
    means, score = _scores(used, weights, first, searched_last + length, candidates, length)
    lowest = float(score.min())
    chosen = int(np.argmax(score <= lowest + _TOLERANCE * max(1.0, abs(lowest))))
    start = _moment(candidates[chosen])
    return Window(start=start, end=start + duration, earliest=earliest, latest_start=_moment(searched_last),
                  score=float(score[chosen]), run_now_score=float(score[0]),
                  means={name: float(m[chosen]) for name, m in means.items()},
                  run_now_means={name: float(m[0]) for name, m in means.items()},
                  candidates=len(candidates), truncated=truncated)


def _scores(used: Mapping[str, Steps], weights: Mapping[str, float], first: float, last: float,
            starts: np.ndarray, length: float) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Each series' mean over ``[start, start + length)`` and the objective, normalised over ``[first, last)``."""
    means = {name: steps.integral(starts, starts + length) / length for name, steps in used.items()}
    if len(used) == 1:
        (name, only), = means.items()
        return means, weights[name] * only
    score = np.zeros_like(starts)
    for name, steps in used.items():
        level = float(steps.integral(first, last)) / (last - first)
        score = score + weights[name] * means[name] / (level if level > 0 else 1.0)
    return means, score


def score_starts(window: Window, series: Steps | Mapping[str, Steps], starts: list[datetime],
                 weights: Mapping[str, float] | None = None) -> list[float]:
    """The objective of other starts on the scale of ``window`` (its search's span and normalisation).

    The series must cover each start's job. Used to compare a planned start
    with a fresh search's best on the same forecast.
    """
    named = {"carbon": series} if isinstance(series, Steps) else dict(series)
    weights = dict(weights) if weights is not None else {name: 1.0 for name in named}
    used = {name: named[name] for name in window.means}
    length = window.duration.total_seconds()
    first, last = _seconds(window.earliest), _seconds(window.latest_start) + length
    _, score = _scores(used, weights, first, last, np.array([_seconds(s) for s in starts], dtype=float), length)
    return [float(v) for v in np.atleast_1d(score)]
