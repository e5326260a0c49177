"""A synthetic, seeded trace of grid carbon intensity with the shapes that matter for scheduling.

Who calls it: nobody at run time. It generated the shipped trace
``examples/carbon/diurnal-grid.csv`` that the demo and the tests read through
:class:`mape.monitor.carbon.series.SeriesProvider`; run it again with
``python -m mape.monitor.carbon.synthetic examples/carbon/diurnal-grid.csv``
(a test checks that this reproduces the shipped file byte for byte).

The model (times in UTC, values in gCO2/kWh) adds, on top of a seasonal base
(280, about 50 higher in January than in July):

* a **solar dip** around 12:30, deeper and wider in summer (60 to 160);
* a morning shoulder at 08:00 and an **evening peak** around 18:30 (60 to 80);
* a night trough around 03:30, when demand is lowest;
* a **weekly pattern**: Saturdays 35 and Sundays 50 below weekdays;
* **weather**: slow noise (an AR(1) process with a 48 h time constant, 45 g
  standard deviation) for windy and calm spells, plus fast noise (2 h, 8 g).

It is floored at 25 g and rounded to 0.1 g. Its shape resembles a European
grid with much solar, not any real one; use recorded traces for numbers that
mean something about a region.

>>> trace = diurnal_trace(days=7)
>>> len(trace), trace[0].time.isoformat(), trace[0].source
(336, '2026-01-05T00:00:00+00:00', 'synthetic')
>>> noon = [p.g_per_kwh for p in trace if p.time.hour == 12 and p.time.minute == 30]
>>> evening = [p.g_per_kwh for p in trace if p.time.hour == 18 and p.time.minute == 30]
>>> all(n < e for n, e in zip(noon, evening))
True
"""

from __future__ import annotations

import argparse
import math
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np

from mape.monitor.carbon.provider import IntensityPoint

__all__ = ["DEFAULT_START", "diurnal_trace", "write_csv"]

#: Monday 5 January 2026, 00:00 UTC: the first row of the shipped trace.
DEFAULT_START = datetime(2026, 1, 5, tzinfo=timezone.utc)
_SEED = 20260105


def diurnal_trace(start: datetime = DEFAULT_START, *, days: int = 364, step: timedelta = timedelta(minutes=30),
                  seed: int = _SEED) -> list[IntensityPoint]:
    """A seeded synthetic trace of ``days`` days at ``step`` resolution from ``start`` (see the module).

    Parameters
    ----------
    start : datetime
        First timestamp (aware; converted to UTC).
    days : int
        Length; 364 (52 weeks) repeats without breaking the weekly pattern.
    step : timedelta
        Resolution, from 5 minutes to 1 hour.
    seed : int
        Seed of the noise: the same arguments give the same trace.
    """
    start = start.astimezone(timezone.utc)
    n = int(timedelta(days=days) / step)
    offsets = np.arange(n) * step.total_seconds()
    hours = (start.hour + start.minute / 60 + offsets / 3600) % 24
    day = (start - datetime(start.year, 1, 1, tzinfo=timezone.utc)).total_seconds() / 86400 + offsets / 86400
    weekday = (start.weekday() + np.floor((start.hour * 3600 + start.minute * 60 + offsets) / 86400)) % 7

    season = np.cos(2 * math.pi * (day - 15) / 365.25)  # 1 in mid-January, -1 in mid-July
    base = 280 + 50 * season
    daylight = 12 - 4 * season  # hours of sun: 8 in winter, 16 in summer
    sun = np.clip(np.cos(math.pi * (hours - 12.5) / daylight), 0, None) ** 1.5
    sun[np.abs(hours - 12.5) >= daylight / 2] = 0
    solar = -(110 - 50 * season) * sun

    def bump(centre: float | np.ndarray, width: float) -> np.ndarray:
        return np.exp(-0.5 * ((hours - centre) / width) ** 2)

    daily = solar + 35 * bump(8.0, 1.2) + (70 + 10 * season) * bump(18.5 - 0.5 * season, 1.5) - 30 * bump(3.5, 2.0)
    weekly = np.select([weekday == 5, weekday == 6], [-35.0, -50.0], 0.0)

    rng = np.random.default_rng(seed)
    weather = _ar1(rng.standard_normal(n), step, tau=timedelta(hours=48), sigma=45.0)
    jitter = _ar1(rng.standard_normal(n), step, tau=timedelta(hours=2), sigma=8.0)

    values = np.round(np.maximum(base + daily + weekly + weather + jitter, 25.0), 1)
    return [IntensityPoint(start + i * step, float(v), "synthetic") for i, v in enumerate(values)]


def _ar1(shocks: np.ndarray, step: timedelta, *, tau: timedelta, sigma: float) -> np.ndarray:
    """An AR(1) process with time constant ``tau`` and stationary standard deviation ``sigma``."""
    phi = math.exp(-step / tau)
    scale = sigma * math.sqrt(1 - phi * phi)
    out = np.empty_like(shocks)
    level = sigma * shocks[0]
    for i, shock in enumerate(shocks):
        level = level if i == 0 else phi * level + scale * shock
        out[i] = level
    return out


def write_csv(points: list[IntensityPoint], path: str | Path) -> Path:
    """Write ``time,g_co2_per_kwh`` rows (``2026-01-05T00:00:00Z,312.4``) to ``path``."""
    path = Path(path)
    lines = ["time,g_co2_per_kwh"]
    lines += [f"{p.time.strftime('%Y-%m-%dT%H:%M:%SZ')},{p.g_per_kwh:.1f}" for p in points]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Write the synthetic diurnal carbon intensity trace as CSV.")
    parser.add_argument("path", type=Path, help="output file, e.g. examples/carbon/diurnal-grid.csv")
    parser.add_argument("--days", type=int, default=364)
    parser.add_argument("--step-minutes", type=int, default=30)
    parser.add_argument("--seed", type=int, default=_SEED)
    args = parser.parse_args(argv)
    trace = diurnal_trace(days=args.days, step=timedelta(minutes=args.step_minutes), seed=args.seed)
    print(f"{write_csv(trace, args.path)}: {len(trace)} rows")


if __name__ == "__main__":
    main()
