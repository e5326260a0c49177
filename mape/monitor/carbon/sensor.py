"""The ``carbon`` signals of a tick: the grid's intensity now and what the forecast says of the hours ahead.

Who calls it: the Monitor stage, once per tick (:meth:`CarbonSensor.measure`
answers repeated calls for the same tick from memory, so every model of the
fleet shares one reading), and :func:`carbon_observations` for each model.
The observations (sensor ``carbon``, labels ``{}``) are what policies read as
``carbon.<field>`` (declared in :data:`mape.plan.fields.CONTEXT_FIELDS`):

``carbon.intensity``
    gCO2/kWh now.
``carbon.forecast_min``
    The lowest value forecast within the horizon (the current step included).
``carbon.forecast_min_in_seconds``
    Seconds from now until that lowest value begins (0 if it is in force now;
    the earliest, if it occurs more than once).
``carbon.forecast_mean``
    The time-weighted mean over the horizon, as far as the forecast reaches.

A signal the provider cannot give is absent, never 0: a provider that fails
gives a report of ``None`` values and no observations, so a policy such as
"retrain when ``carbon.intensity < carbon.forecast_mean``" does not fire on
missing data.
"""

from __future__ import annotations

import logging
import statistics
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Callable, TypeVar

from knowledge.tables import Observation
from mape._util.timeutil import ensure_utc
from mape.errors import InvalidParameterError
from mape.monitor.carbon.provider import IntensityPoint, IntensityProvider, steps_between

__all__ = ["CarbonReport", "CarbonSensor", "carbon_observations"]

log = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass(frozen=True)
class CarbonReport:
    """One reading of the grid's carbon intensity; ``None`` fields are unknown.

    Attributes
    ----------
    at : datetime
        The tick it is for.
    intensity : float or None
        gCO2/kWh now.
    forecast_min : float or None
        Lowest value within the horizon.
    forecast_min_in_seconds : float or None
        Seconds from ``at`` until ``forecast_min`` begins.
    forecast_mean : float or None
        Time-weighted mean within the horizon.
    source : str or None
        The provider's source (``series:diurnal-grid.csv``, ``uk:national``, ...).
    """

    at: datetime
    intensity: float | None = None
    forecast_min: float | None = None
    forecast_min_in_seconds: float | None = None
    forecast_mean: float | None = None
    source: str | None = None

    def __str__(self) -> str:
        now = "unknown" if self.intensity is None else f"{self.intensity:g}"
        low = "" if self.forecast_min is None else (
            f", lowest {self.forecast_min:g} in {self.forecast_min_in_seconds / 3600:.1f} h")
        return f"carbon intensity {now} gCO2/kWh at {self.at.isoformat()}{low} ({self.source or 'no source'})"


#: The report fields written as ``carbon.<field>`` observations.
SIGNALS = ("intensity", "forecast_min", "forecast_min_in_seconds", "forecast_mean")


class CarbonSensor:
    """Reads a provider once per tick into a :class:`CarbonReport`.

    Parameters
    ----------
    provider : IntensityProvider
        Where intensity comes from.
    horizon : timedelta
        How far ahead ``forecast_min`` and ``forecast_mean`` look.

    Examples
    --------
    >>> from datetime import timezone
    >>> from examples.carbon import DIURNAL_GRID
    >>> from mape.monitor.carbon.series import SeriesProvider
    >>> sensor = CarbonSensor(SeriesProvider(DIURNAL_GRID), horizon=timedelta(hours=12))
    >>> report = sensor.measure(datetime(2026, 3, 10, 7, 0, tzinfo=timezone.utc))
    >>> report.forecast_min <= report.forecast_mean, report.forecast_min_in_seconds / 3600
    (True, 6.0)
    >>> [(o.metric, o.value) for o in carbon_observations(1, report.at, report)][:2]
    [('carbon.intensity', 259.9), ('carbon.forecast_min', 161.2)]
    """

    def __init__(self, provider: IntensityProvider, *, horizon: timedelta = timedelta(hours=12)) -> None:
        if not isinstance(provider, IntensityProvider):
            raise InvalidParameterError.for_parameter("provider", "CarbonSensor",
                                                      "an IntensityProvider (current and forecast methods)", provider)
        if not isinstance(horizon, timedelta) or horizon <= timedelta(0):
            raise InvalidParameterError.for_parameter("horizon", "CarbonSensor", "a timedelta longer than 0", horizon)
        self.provider = provider
        self.horizon = horizon
        self._last: CarbonReport | None = None

    def __repr__(self) -> str:
        return f"CarbonSensor({self.provider!r}, horizon={self.horizon!r})"

    def measure(self, at: datetime) -> CarbonReport:
        """The reading for the tick at ``at``; a repeated call for the same ``at`` asks the provider nothing."""
        at = ensure_utc(at)
        if self._last is not None and self._last.at == at:
            return self._last
        end = at + self.horizon
        current = self._ask("current", self.provider.current, at)
        forecast = self._ask("forecast", self.provider.forecast, at, end) or []
        if current is not None and (not forecast or forecast[0].time > at):
            forecast = [current, *(p for p in forecast if p.time > current.time)]
        steps = steps_between(sorted(forecast, key=lambda p: p.time), at, end)
        source = current.source if current is not None else steps[0].source if steps else None
        report = CarbonReport(at=at, intensity=None if current is None else current.g_per_kwh, source=source,
                              **_summary(steps, at, end))
        self._last = report
        return report

    def _ask(self, what: str, method: Callable[..., T], *args: Any) -> T | None:
        try:
            return method(*args)
        except Exception as exc:  # noqa: BLE001 - a broken provider must not stop the Monitor stage
            log.warning("Carbon provider %r failed to give its %s: %s: %s", self.provider, what,
                        type(exc).__name__, exc)
            return None


def _summary(steps: list[IntensityPoint], at: datetime, end: datetime) -> dict[str, float | None]:
    """Minimum, its delay and the time-weighted mean of the steps over ``[at, end)``.

    Each step lasts until the next; the last one for the forecast's typical
    step (the median gap), at most until ``end``.
    """
    if not steps:
        return {}
    low = min(steps, key=lambda p: p.g_per_kwh)  # the earliest of equal minima
    typical = statistics.median_low([b.time - a.time for a, b in zip(steps, steps[1:])]) if len(steps) > 1 else None
    ends = [p.time for p in steps[1:]] + [end if typical is None else min(end, steps[-1].time + typical)]
    spans = [(stop - max(p.time, at)).total_seconds() for p, stop in zip(steps, ends)]
    total = sum(s for s in spans if s > 0)
    mean = (sum(p.g_per_kwh * s for p, s in zip(steps, spans) if s > 0) / total if total > 0
            else statistics.fmean(p.g_per_kwh for p in steps))
    return {"forecast_min": low.g_per_kwh,
            "forecast_min_in_seconds": max((low.time - at).total_seconds(), 0.0),
            "forecast_mean": round(mean, 6)}


def carbon_observations(model_id: int, at: datetime, report: CarbonReport) -> list[Observation]:
    """The ``carbon.*`` observations of one reading: one per known field, none for an unknown one.

    >>> from datetime import timezone
    >>> at = datetime(2026, 1, 5, tzinfo=timezone.utc)
    >>> [(r.metric, r.value) for r in carbon_observations(1, at, CarbonReport(at, intensity=212.5))]
    [('carbon.intensity', 212.5)]
    >>> carbon_observations(1, at, CarbonReport(at))
    []
    """
    return [Observation(time=at, model_id=model_id, sensor="carbon", metric=f"carbon.{name}", value=float(value))
            for name in SIGNALS if (value := getattr(report, name)) is not None]
