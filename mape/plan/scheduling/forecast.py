"""Forecasters for backtests: what a scheduler would have believed about the next hours, issue by issue.

What it does: a :class:`Forecaster` turns a recorded series and an issue time
(an index into it) into a forecast of the next ``horizon`` values. Four kinds,
named as on the command line (:func:`make_forecaster`):

``perfect``
    The actual series: perfect foresight, the bound on what scheduling gains.
``noisy:SIGMA``
    The actual series times ``1 + SIGMA * e`` with ``e`` standard normal,
    drawn from a generator seeded by the seed and the issue index (the same
    forecast whatever the order of calls). ``noisy:0.05`` is the convention of
    the carbon-aware scheduling literature (Wiesner et al., 2021).
``naive[:LAG]``
    Seasonal naive: what happened one ``LAG`` ago (default ``1d``). It reads
    only the past; on grids where wind moves the intensity it is a poor guide.
``past`` (the default of ``mape carbon backtest``)
    A real forecaster that reads only values before the issue time: a diurnal
    profile (the last 14 days, recent days weighted more), a weekly profile
    (day means of the last 8 weeks, shrunk towards none), and the recent
    level: the residual from those profiles, averaged by hour, follows an
    AR(2) model fitted by least squares on the last 28 days, which carries
    the current weather on and lets it fade into the 28-day mean.

The forecaster's *recent error* (how far its predicted gains have been from
the realised ones) is measured by the backtest, the same way for every
forecaster (:mod:`mape.plan.scheduling.backtest`).

Who calls it: :func:`mape.plan.scheduling.backtest.backtest`.

References
----------
Wiesner, P., Behnke, I., Scheinert, D., Gontarska, K. and Thamsen, L. (2021).
"Let's Wait Awhile: How Temporal Workload Shifting Can Reduce Carbon Emissions
in the Cloud". Middleware '21.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from datetime import timedelta

import numpy as np

from mape._util.timeutil import format_duration, parse_duration
from mape.errors import InvalidParameterError

__all__ = ["FORECASTERS", "Forecaster", "NaiveSeasonal", "Noisy", "PastProfile", "Perfect", "make_forecaster"]

#: The spellings :func:`make_forecaster` reads.
FORECASTERS = ("past", "perfect", "noisy:SIGMA", "naive[:LAG]")
DEFAULT_SEED = 20260105


class Forecaster(ABC):
    """A forecast of a series on a regular grid, as it would have been issued at the start of step ``at``.

    Parameters
    ----------
    step : timedelta
        The series' resolution (it divides an hour).
    """

    name = "forecaster"

    def __init__(self, *, step: timedelta) -> None:
        self.step = step

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"

    @property
    def steps_per_day(self) -> int:
        return int(timedelta(days=1) / self.step)

    @property
    def steps_per_hour(self) -> int:
        return max(1, int(timedelta(hours=1) / self.step))

    @abstractmethod
    def predict(self, values: np.ndarray, at: int, horizon: int) -> np.ndarray:
        """The forecast of ``values[at:at + horizon]`` (``horizon`` floats, never negative)."""


class Perfect(Forecaster):
    """The actual values: perfect foresight.

    >>> Perfect(step=timedelta(hours=1)).predict(np.array([3.0, 1.0, 2.0]), 1, 2)
    array([1., 2.])
    """

    name = "perfect"

    def predict(self, values: np.ndarray, at: int, horizon: int) -> np.ndarray:
        return np.asarray(values[at:at + horizon], dtype=float).copy()


class Noisy(Forecaster):
    """The actual values with relative Gaussian error ``sigma``, seeded per issue (see the module).

    >>> noisy = Noisy(0.05, step=timedelta(hours=1))
    >>> values = np.full(48, 200.0)
    >>> bool(np.array_equal(noisy.predict(values, 5, 10), noisy.predict(values, 5, 10)))
    True
    >>> round(float(np.std(noisy.predict(np.full(10_000, 200.0), 0, 10_000) / 200 - 1)), 2)
    0.05
    """

    def __init__(self, sigma: float, *, step: timedelta, seed: int = DEFAULT_SEED) -> None:
        super().__init__(step=step)
        if isinstance(sigma, bool) or not isinstance(sigma, (int, float)) or not 0 <= sigma < 1:
            raise InvalidParameterError.for_parameter("sigma", "Noisy", "a float in [0, 1)", sigma)
        self.sigma = float(sigma)
        self.seed = seed
        self.name = f"noisy:{self.sigma:g}"

    def predict(self, values: np.ndarray, at: int, horizon: int) -> np.ndarray:
        actual = np.asarray(values[at:at + horizon], dtype=float)
        error = np.random.default_rng([self.seed, at]).standard_normal(len(actual))
        return np.maximum(actual * (1.0 + self.sigma * error), 0.0)


class NaiveSeasonal(Forecaster):
    """What happened one ``lag`` before, repeated: reads only the past.

    >>> naive = NaiveSeasonal(step=timedelta(hours=8), lag=timedelta(days=1))
    >>> naive.predict(np.array([1.0, 2.0, 3.0, 9.0, 9.0, 9.0]), 3, 4)
    array([1., 2., 3., 1.])
    """

    def __init__(self, *, step: timedelta, lag: timedelta = timedelta(days=1)) -> None:
        super().__init__(step=step)
        if lag < step or lag % step:
            raise InvalidParameterError.for_parameter("lag", "NaiveSeasonal", f"a multiple of the step "
                                                      f"({format_duration(step)})", format_duration(lag))
        self.lag = lag
        self.name = "naive" if lag == timedelta(days=1) else f"naive:{format_duration(lag)}"

    def predict(self, values: np.ndarray, at: int, horizon: int) -> np.ndarray:
        period = int(self.lag / self.step)
        if at < period:  # less than one season seen: persistence of what there is
            return np.full(horizon, float(values[at - 1]) if at > 0 else 0.0)
        season = np.asarray(values[at - period:at], dtype=float)
        return np.resize(season, horizon)


class PastProfile(Forecaster):
    """A forecaster from the past only: diurnal and weekly profiles plus an AR(2) recent level (see the module).

    Parameters
    ----------
    step : timedelta
        The series' resolution.
    profile_days : int
        Days behind the diurnal profile (default 14), weighted with a
        half-life of ``half_life_days`` (default 7).
    weeks : int
        Weeks behind the weekly profile (default 8; it needs two).
    level_days : int
        Days the AR(2) model of the residual is fitted on (default 28).

    Examples
    --------
    On a clean daily cycle it forecasts the cycle:

    >>> step = timedelta(hours=1)
    >>> cycle = 100 + 50 * np.sin(2 * np.pi * np.arange(24 * 30) / 24)
    >>> forecast = PastProfile(step=step).predict(cycle, 24 * 29, 24)
    >>> bool(np.max(np.abs(forecast - cycle[24 * 29:])) < 1.0)
    True
    """

    name = "past"

    def __init__(self, *, step: timedelta, profile_days: int = 14, half_life_days: float = 7.0, weeks: int = 8,
                 level_days: int = 28) -> None:
        super().__init__(step=step)
        self.profile_days = profile_days
        self.half_life_days = half_life_days
        self.weeks = weeks
        self.level_days = level_days

    def predict(self, values: np.ndarray, at: int, horizon: int) -> np.ndarray:
        per_day, per_hour = self.steps_per_day, self.steps_per_hour
        keep = max(self.weeks * 7, self.level_days, self.profile_days) * per_day
        history = np.asarray(values[max(0, at - keep):at], dtype=float)
        n = len(history)
        if n < per_day:  # less than a day seen: persistence
            return np.full(horizon, history[-1] if n else 0.0)
        days = min(self.profile_days, n // per_day)
        block = history[n - days * per_day:].reshape(days, per_day)
        weights = 0.5 ** (np.arange(days)[::-1] / self.half_life_days)
        diurnal = weights @ (block - block.mean(axis=1, keepdims=True)) / weights.sum()
        weeks = min(self.weeks, n // (7 * per_day))
        weekly = np.zeros(7)
        if weeks >= 2:
            day_means = history[n - weeks * 7 * per_day:].reshape(weeks, 7, per_day).mean(axis=2)
            weekly = (day_means - day_means.mean(axis=1, keepdims=True)).mean(axis=0) * weeks / (weeks + 1)
        # every index is placed relative to `at`: column (j mod a day), day block ((j div a day) mod 7)
        past = np.arange(-n, 0)
        residual = history - diurnal[past % per_day] - weekly[(past // per_day) % 7]
        hours = min(n, self.level_days * per_day) // per_hour
        hourly = residual[n - hours * per_hour:].reshape(hours, per_hour).mean(axis=1)
        ahead = _ar2_forecast(hourly, math.ceil(horizon / per_hour))
        future = np.arange(horizon)
        forecast = diurnal[future % per_day] + weekly[(future // per_day) % 7] + ahead[future // per_hour]
        return np.maximum(forecast, 0.0)


def _ar2_forecast(series: np.ndarray, steps: int) -> np.ndarray:
    """``steps`` values ahead of ``series`` by an AR(2) model with intercept (AR(1) if that is not stationary)."""
    if len(series) < 8:
        return np.full(steps, float(series[-1]))
    y, x1, x2 = series[2:], series[1:-1], series[:-2]
    design = np.column_stack([np.ones_like(y), x1, x2])
    try:
        c, a1, a2 = np.linalg.solve(design.T @ design, design.T @ y)
    except np.linalg.LinAlgError:  # a constant residual: nothing to model
        c, a1, a2 = float(series.mean()), 0.0, 0.0
    if not (abs(a2) < 0.99 and a1 + a2 < 0.99 and a2 - a1 < 0.99):  # outside the stationarity triangle
        mean = float(series.mean())
        centred = series - mean
        denominator = float(centred[:-1] @ centred[:-1])
        phi = min(max(float(centred[1:] @ centred[:-1]) / denominator, 0.0), 0.99) if denominator > 0 else 0.0
        c, a1, a2 = mean * (1 - phi), phi, 0.0
    out = np.empty(steps)
    previous, before = float(series[-1]), float(series[-2])
    for k in range(steps):
        out[k] = c + a1 * previous + a2 * before
        previous, before = out[k], previous
    return out


def make_forecaster(spec: str, *, step: timedelta, seed: int = DEFAULT_SEED) -> Forecaster:
    """The forecaster a command line names: ``past``, ``perfect``, ``noisy:SIGMA`` or ``naive[:LAG]``.

    >>> make_forecaster("noisy:0.05", step=timedelta(minutes=30)).name
    'noisy:0.05'
    >>> make_forecaster("naive:7d", step=timedelta(hours=1)).name
    'naive:1w'
    >>> make_forecaster("crystal-ball", step=timedelta(hours=1))
    Traceback (most recent call last):
    ...
    mape.errors.InvalidParameterError: The 'forecast' parameter of backtest must be one of past, perfect, noisy:SIGMA, naive[:LAG]. Got 'crystal-ball' instead.
    """
    kind, _, argument = spec.strip().partition(":")
    try:
        if kind == "past" and not argument:
            return PastProfile(step=step)
        if kind == "perfect" and not argument:
            return Perfect(step=step)
        if kind == "noisy" and argument:
            return Noisy(float(argument), step=step, seed=seed)
        if kind == "naive":
            return NaiveSeasonal(step=step, lag=parse_duration(argument) if argument else timedelta(days=1))
    except (ValueError, InvalidParameterError):
        pass  # a malformed argument: the error below names the accepted spellings
    raise InvalidParameterError.for_parameter("forecast", "backtest", f"one of {', '.join(FORECASTERS)}", spec)
