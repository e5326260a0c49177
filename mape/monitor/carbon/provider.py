"""What a source of grid carbon intensity answers: the intensity now, and a forecast.

Who uses it: :class:`mape.monitor.carbon.sensor.CarbonSensor` asks a provider
every tick; the providers (:mod:`~mape.monitor.carbon.series`,
:mod:`~mape.monitor.carbon.codecarbon_constant`, :mod:`~mape.monitor.carbon.http`)
implement :class:`IntensityProvider`, and :func:`mape.monitor.carbon.provider_from_config`
picks one from the settings.

Intensity is a **step function** of time: an :class:`IntensityPoint` holds from
its ``time`` until the next point's ``time``. Grid operators publish values per
settlement period (30 min in Great Britain, an hour at Electricity Maps), and a
value stands for its whole period.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol, runtime_checkable

__all__ = ["IntensityPoint", "IntensityProvider", "steps_between"]


@dataclass(frozen=True)
class IntensityPoint:
    """The carbon intensity of the grid from ``time`` until the next point.

    Attributes
    ----------
    time : datetime
        Start of the period the value stands for (timezone-aware UTC).
    g_per_kwh : float
        Grams of CO2 (equivalent) emitted per kWh drawn from the grid.
    source : str
        Where the value came from, e.g. ``series:diurnal-grid.csv``,
        ``codecarbon:DEU`` or ``uk:national``.
    """

    time: datetime
    g_per_kwh: float
    source: str

    def __str__(self) -> str:
        return f"{self.g_per_kwh:g} gCO2/kWh at {self.time.isoformat()} ({self.source})"


@runtime_checkable
class IntensityProvider(Protocol):
    """A source of grid carbon intensity.

    Neither method raises for an unavailable source: a provider that cannot
    answer returns ``None`` (``current``) or ``[]`` (``forecast``), so a
    missing signal stays absent and is never read as 0.
    """

    def current(self, at: datetime) -> IntensityPoint | None:
        """The intensity in force at ``at`` (its ``time`` is the start of its period, at or before ``at``)."""
        ...

    def forecast(self, start: datetime, end: datetime) -> list[IntensityPoint]:
        """The steps of the intensity over ``[start, end)``, sorted by time, as known at ``start``.

        The first point is the step in force at ``start`` (its time may be
        before ``start``); the others start inside the window.
        """
        ...


def steps_between(points: Sequence[IntensityPoint], start: datetime, end: datetime) -> list[IntensityPoint]:
    """The points of a sorted step function that are in force somewhere in ``[start, end)``.

    The step in force at ``start`` comes first, even if it began earlier;
    points at or after ``end`` are left out. Used by providers that fetch a
    longer forecast than asked for.

    >>> from datetime import timezone
    >>> t = lambda h, m=0: datetime(2026, 3, 10, h, m, tzinfo=timezone.utc)
    >>> pts = [IntensityPoint(t(h), 100.0 + h, "x") for h in range(10, 15)]
    >>> [p.time.hour for p in steps_between(pts, t(11, 30), t(13))]
    [11, 12]
    >>> steps_between(pts, t(8), t(9))
    []
    """
    if end <= start or not points:
        return []
    times = [p.time for p in points]
    first = max(bisect.bisect_right(times, start) - 1, 0)
    last = bisect.bisect_left(times, end)
    return list(points[first:last])
