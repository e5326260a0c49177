"""The energy an action uses, and the emissions of that energy on a grid whose intensity varies.

Who calls it: the Execute stage wraps an action's run in :func:`measure_energy`
and stores ``kwh`` (``ActionRun.energy_kwh``) and :func:`emissions_kg`
(``ActionRun.emissions_kg``); :class:`mape.monitor.carbon.codecarbon_constant.CountryConstantProvider`
reads codecarbon's annual per-country figure through :func:`country_intensity`.
It lives in the data layer because both stages use it and stages never
import each other.

codecarbon is used as an **energy meter** only: its
:class:`~codecarbon.OfflineEmissionsTracker` in ``process`` mode (RAPL
counters are root-only in containers; it then estimates the process' CPU
share of the package's power, RAM power, and reads NVML energy counters for
GPUs). It ships annual per-country intensities, no hourly series, so the
emissions of a run are computed here from a time-varying intensity instead.

codecarbon must not phone home or write files. Every setting that could make
it do so is passed explicitly, so a ``.codecarbon.config`` file or a
``CODECARBON_*`` variable cannot turn it back on: ``output_methods=[]`` (no
CSV file, no codecarbon API, no Prometheus or Logfire push),
``emissions_endpoint=None`` (no HTTP output), and a forced carbon intensity
(codecarbon's own emissions figure then never asks Electricity Maps, even
with a token configured for it). The offline tracker makes no geolocation
call.
"""

from __future__ import annotations

import bisect
import logging
import math
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from typing import Any, Protocol

from mape._util.timeutil import ensure_utc, utcnow
from mape.errors import InvalidParameterError

__all__ = ["CountryIntensity", "EnergyMeasurement", "IntensitySample", "country_intensity", "emissions_kg",
           "measure_energy"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CountryIntensity:
    """codecarbon's annual carbon intensity of a country's electricity.

    Attributes
    ----------
    g_per_kwh : float
        gCO2eq per kWh.
    country_iso_code : str or None
        The three-letter code it is for; ``None`` when it is the world average.
    country_name : str
        The country's name, or ``"world average"``.
    """

    g_per_kwh: float
    country_iso_code: str | None
    country_name: str


@lru_cache(maxsize=64)
def country_intensity(country_iso_code: str | None) -> CountryIntensity:
    """codecarbon's offline annual intensity of a country; the world average for ``None`` or an unknown code.

    It is the figure codecarbon's ``OfflineEmissionsTracker`` applies
    (``Emissions.get_country_emissions``): the country's published intensity,
    or one computed from its energy mix, from codecarbon's packaged
    ``global_energy_mix.json``. Callers state a fallback to the world
    average: ``country_iso_code`` is then ``None``.

    >>> country_intensity("DEU")
    CountryIntensity(g_per_kwh=380.95, country_iso_code='DEU', country_name='Germany')
    >>> country_intensity("XYZ")
    CountryIntensity(g_per_kwh=475.0, country_iso_code=None, country_name='world average')
    """
    from codecarbon.core.emissions import Emissions
    from codecarbon.core.units import Energy
    from codecarbon.external.geography import GeoMetadata
    from codecarbon.input import DataSource

    data = DataSource()
    code = (country_iso_code or "").strip().upper()
    mix = data.get_global_energy_mix_data()
    if code in mix:
        kg = Emissions(data).get_country_emissions(Energy.from_energy(kWh=1.0), GeoMetadata(country_iso_code=code))
        return CountryIntensity(round(kg * 1000, 6), code, str(mix[code].get("country_name", code)))
    world = float(data.get_carbon_intensity_per_source_data()["world_average"])
    return CountryIntensity(world, None, "world average")


@dataclass
class EnergyMeasurement:
    """What :func:`measure_energy` found; filled in when the measured block exits.

    Attributes
    ----------
    kwh : float or None
        Energy of the block (CPU, RAM and GPUs of this process); ``None`` if
        codecarbon could not measure (then ``error`` says why), never a guessed 0.
    cpu_kwh, ram_kwh, gpu_kwh : float or None
        Its parts, as codecarbon reports them.
    start, end : datetime or None
        When the block started and ended (aware UTC).
    error : str or None
        Why there is no measurement.
    """

    kwh: float | None = None
    cpu_kwh: float | None = None
    ram_kwh: float | None = None
    gpu_kwh: float | None = None
    start: datetime | None = None
    end: datetime | None = None
    error: str | None = None

    def emissions_kg(self, intensity: Iterable[IntensitySample | tuple[datetime, float]]) -> float | None:
        """:func:`emissions_kg` of this measurement over its own interval."""
        if self.kwh is None or self.start is None or self.end is None:
            return None
        return emissions_kg(self.kwh, intensity, self.start, self.end)


@contextmanager
def measure_energy(*, country_iso_code: str | None = None, measure_power_secs: float = 15.0,
                   clock: Callable[[], datetime] = utcnow) -> Iterator[EnergyMeasurement]:
    """Measure the energy the enclosed block uses, with codecarbon; never raises for codecarbon's sake.

    Parameters
    ----------
    country_iso_code : str, optional
        Where the machine is; only codecarbon's own (unused) emissions figure
        depends on it.
    measure_power_secs : float
        How often codecarbon samples power while the block runs.
    clock : callable
        Gives ``start`` and ``end``.

    Yields
    ------
    EnergyMeasurement
        Filled in on exit, also when the block raises (its exception goes on).

    Notes
    -----
    In ``process`` mode codecarbon measures the whole Python process: two
    blocks measured at the same time in one process (threads) each count both.
    Starting the first tracker of a process probes the hardware (about 1.5 s
    here); later ones start in milliseconds. codecarbon's logger (``codecarbon``)
    is set to ``ERROR`` if it was lower, so its start-up chatter stays out of
    the controller's log.

    Examples
    --------
    >>> with measure_energy() as energy:
    ...     _ = sum(i * i for i in range(10_000))
    >>> energy.kwh is None or energy.kwh >= 0
    True
    """
    measurement = EnergyMeasurement(start=ensure_utc(clock()))
    tracker = _start_tracker(country_iso_code, measure_power_secs, measurement)
    try:
        yield measurement
    finally:
        measurement.end = ensure_utc(clock())
        if tracker is not None:
            _stop_tracker(tracker, measurement)


def _start_tracker(country_iso_code: str | None, measure_power_secs: float, measurement: EnergyMeasurement) -> Any:
    try:
        from codecarbon import OfflineEmissionsTracker

        codecarbon_log = logging.getLogger("codecarbon")
        if codecarbon_log.getEffectiveLevel() < logging.ERROR:
            codecarbon_log.setLevel(logging.ERROR)
        tracker = OfflineEmissionsTracker(
            country_iso_code=country_iso_code,
            tracking_mode="process",
            output_methods=[],
            emissions_endpoint=None,
            force_carbon_intensity_g_co2e_kwh=country_intensity(country_iso_code).g_per_kwh,
            allow_multiple_runs=True,
            measure_power_secs=measure_power_secs,
            log_level="error",
        )
        tracker.start()
        return tracker
    except Exception as exc:  # noqa: BLE001 - an energy meter that fails must not fail the action
        measurement.error = f"codecarbon could not start: {type(exc).__name__}: {exc}"
        log.warning("Energy measurement is off for this run; %s", measurement.error)
        return None


def _stop_tracker(tracker: Any, measurement: EnergyMeasurement) -> None:
    try:
        tracker.stop()
        data = getattr(tracker, "final_emissions_data", None)
        kwh = _finite(getattr(data, "energy_consumed", None))
        if kwh is None or kwh < 0:
            measurement.error = "codecarbon reported no energy"
        else:
            measurement.kwh = kwh
            measurement.cpu_kwh = _finite(getattr(data, "cpu_energy", None))
            measurement.ram_kwh = _finite(getattr(data, "ram_energy", None))
            measurement.gpu_kwh = _finite(getattr(data, "gpu_energy", None))
    except Exception as exc:  # noqa: BLE001 - as above
        measurement.error = f"codecarbon could not stop: {type(exc).__name__}: {exc}"
    if measurement.error:
        log.warning("Energy of the run is unknown: %s", measurement.error)


def _finite(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


class IntensitySample(Protocol):
    """Anything with a ``time`` and a ``g_per_kwh``, such as :class:`mape.monitor.carbon.provider.IntensityPoint`."""

    @property
    def time(self) -> datetime: ...

    @property
    def g_per_kwh(self) -> float: ...


def emissions_kg(kwh: float | None, intensity: Iterable[IntensitySample | tuple[datetime, float]],
                 start: datetime, end: datetime) -> float | None:
    """Emissions, in kg CO2eq, of ``kwh`` used evenly over ``[start, end]`` on a grid of varying intensity.

    The energy is taken to be spread evenly over the interval, so the result
    is ``kwh`` times the time-weighted mean intensity over the interval,
    divided by 1000 (g to kg). ``intensity`` is a step function: each sample
    (an object with ``time`` and ``g_per_kwh``, or a ``(time, g_per_kwh)``
    pair, e.g. from stored ``carbon.intensity`` observations) holds until the
    next one; before the first sample, the first sample's value holds. For a
    zero-length interval, the value in force at ``start`` is used. Samples
    with a missing or non-finite value are skipped.

    Returns ``None`` when ``kwh`` is ``None`` or there is no usable sample:
    unknown emissions are never reported as 0.

    >>> from datetime import timezone
    >>> t = lambda h, m=0: datetime(2026, 3, 10, h, m, tzinfo=timezone.utc)
    >>> emissions_kg(2.0, [(t(11), 100.0), (t(12, 30), 300.0)], t(12), t(13))  # 2 kWh at a mean of 200 g
    0.4
    >>> emissions_kg(None, [(t(11), 100.0)], t(12), t(13)) is None
    True
    """
    if kwh is None:
        return None
    if not isinstance(kwh, (int, float)) or isinstance(kwh, bool) or not math.isfinite(kwh) or kwh < 0:
        raise InvalidParameterError.for_parameter("kwh", "emissions_kg", "a finite, non-negative float", kwh)
    start, end = ensure_utc(start), ensure_utc(end)
    if end < start:
        raise InvalidParameterError.for_parameter("end", "emissions_kg", f"at or after start ({start.isoformat()})",
                                                  end)
    steps = sorted(_samples(intensity))
    if not steps:
        return None

    times = [time for time, _ in steps]

    def value_at(moment: datetime) -> float:
        return steps[max(bisect.bisect_right(times, moment) - 1, 0)][1]

    if end == start:
        return kwh * value_at(start) / 1000
    cuts = [start, *(time for time, _ in steps if start < time < end), end]
    weighted = sum(value_at(a) * (b - a).total_seconds() for a, b in zip(cuts, cuts[1:]))
    return kwh * weighted / (end - start).total_seconds() / 1000


def _samples(intensity: Iterable[IntensitySample | tuple[datetime, float]]) -> Iterator[tuple[datetime, float]]:
    for sample in intensity:
        if isinstance(sample, tuple):
            time, value = sample
        else:
            time, value = sample.time, sample.g_per_kwh
        number = _finite(value)
        if number is not None:
            yield ensure_utc(time), number
