"""A synthetic, seeded year of carbon intensity on a windy grid: the shipped trace of the scheduling backtests.

Who calls it: nobody at run time. It wrote ``examples/carbon/windy-grid.csv.gz``
(hourly, 52 weeks from Monday 5 January 2026) with::

    python -m examples.carbon.windy_grid examples/carbon/windy-grid.csv.gz

and the tests call :func:`windy_grid` for other resolutions (a 5-minute year
is the same seed, not averaged by the hour) and check that the shipped file is
reproduced byte for byte.

Why another trace: on ``diurnal-grid.csv`` the day's shape explains most of
the variance, and any forecaster that knows the shape does well. On grids
with much wind (Great Britain, Denmark, northern Germany), the weather moves
the intensity by more than the hour of the day does, over spells of one to
several days. There, what happened yesterday at this hour is a poor guide:
where the day's shape offers little (jobs at noon, in the solar dip), a
scheduler that trusts a naive seasonal forecast defers into hours that turn
out dirtier than now (``benchmarks/carbon_backtest.py``).

The model (UTC, gCO2/kWh), simulated every 5 minutes and averaged to the step
asked for:

* **fossil base** 330, 30 higher in mid-January than in mid-July (demand);
* **diurnal**: a night trough around 03:30 (-35), a morning shoulder at 08:00
  (+20), an evening peak around 18:00 (+45) and a **solar dip** around 12:30,
  20 deep in winter and 70 in summer;
* **weekly**: Saturdays 20 and Sundays 35 below weekdays;
* **wind** displaces up to 260: its capacity factor is a logistic function of
  a wind speed that sums a seasonal mean (windier in winter), a **regime**
  (an AR(1) process with a 5-day time constant: windy and calm spells) and
  **synoptic weather** (AR(1) noise filtered twice with a 10-hour time
  constant: smooth ramps over hours, fronts that pass within a day or two);
* **fast noise**: AR(1), 90-minute time constant, 8 standard deviation.

It is floored at 20 and rounded to 0.1. It resembles no real grid closely;
use recorded traces for claims about a region.

>>> trace = windy_grid(days=14)
>>> len(trace), trace.start.isoformat(), trace.step
(336, '2026-01-05T00:00:00+00:00', datetime.timedelta(seconds=3600))
>>> bool(trace.values.min() >= 20 and trace.values.max() < 600)
True
"""

from __future__ import annotations

import argparse
import gzip
import math
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
from scipy.signal import lfilter

from mape._util.timeutil import parse_duration
from mape.plan.scheduling.trace import Trace

__all__ = ["SEED", "START", "windy_grid", "write_csv"]

#: Monday 5 January 2026, 00:00 UTC: the first row of the shipped trace.
START = datetime(2026, 1, 5, tzinfo=timezone.utc)
SEED = 5
_FINE = timedelta(minutes=5)


def windy_grid(*, days: int = 364, step: timedelta = timedelta(hours=1), start: datetime = START,
               seed: int = SEED) -> Trace:
    """``days`` days of the windy grid at ``step`` (from 5 minutes to 1 hour, dividing an hour), seeded."""
    if step < _FINE or step % _FINE or timedelta(hours=1) % step:
        raise ValueError(f"step must be a multiple of 5 minutes that divides an hour, got {step}")
    n = int(timedelta(days=days) / _FINE)
    minutes = np.arange(n) * 5.0
    hours = (start.hour + start.minute / 60 + minutes / 60) % 24
    day_of_year = (start - datetime(start.year, 1, 1, tzinfo=timezone.utc)).days + minutes / 1440
    weekday = (start.weekday() + (start.hour * 60 + start.minute + minutes) // 1440) % 7
    season = np.cos(2 * math.pi * (day_of_year - 15) / 365.25)  # 1 in mid-January, -1 in mid-July

    def bump(centre: float, width: float) -> np.ndarray:
        distance = (hours - centre + 12) % 24 - 12
        return np.exp(-0.5 * (distance / width) ** 2)

    daylight = 12 - 4 * season
    sun = np.clip(np.cos(math.pi * (hours - 12.5) / daylight), 0, None) ** 1.5
    sun[np.abs(hours - 12.5) >= daylight / 2] = 0
    diurnal = -35 * bump(3.5, 2.5) + 20 * bump(8.0, 1.5) + 45 * bump(18.0, 1.8) - (45 - 25 * season) * sun
    weekly = np.select([weekday == 5, weekday == 6], [-20.0, -35.0], 0.0)

    rng = np.random.default_rng(seed)
    regime = _ar1(rng.standard_normal(n), tau=timedelta(days=5))
    synoptic = _ar1(_ar1(rng.standard_normal(n), tau=timedelta(hours=10)), tau=timedelta(hours=10))
    synoptic /= synoptic.std()
    speed = 7.5 + 2.0 * season + 2.2 * regime + 2.8 * synoptic
    wind = 260 / (1 + np.exp(-(speed - 8.5) / 1.5))
    fast = 8 * _ar1(rng.standard_normal(n), tau=timedelta(minutes=90))

    fine = np.maximum(330 + 30 * season + diurnal + weekly - wind + fast, 20.0)
    per_step = int(step / _FINE)
    values = np.round(fine.reshape(-1, per_step).mean(axis=1), 1)
    return Trace(start.astimezone(timezone.utc), step, values, "windy-grid")


def _ar1(shocks: np.ndarray, *, tau: timedelta) -> np.ndarray:
    """AR(1) at 5-minute steps with time constant ``tau`` and unit deviation, stationary from the first value.

    ``x[0] = e[0]`` and ``x[i] = phi x[i-1] + sqrt(1 - phi^2) e[i]`` with ``phi = exp(-5 min / tau)``.
    """
    phi = math.exp(-_FINE / tau)
    driven = np.concatenate([shocks[:1], math.sqrt(1 - phi * phi) * shocks[1:]])
    return lfilter([1.0], [1.0, -phi], driven)


def write_csv(trace: Trace, path: str | Path) -> Path:
    """Write ``time,g_co2_per_kwh`` rows; gzip-compressed (reproducibly: no timestamp) when ``path`` ends in .gz."""
    path = Path(path)
    lines = ["time,g_co2_per_kwh"]
    lines += [f"{trace.time(i).strftime('%Y-%m-%dT%H:%M:%SZ')},{value:.1f}" for i, value in enumerate(trace.values)]
    data = ("\n".join(lines) + "\n").encode("utf-8")
    if path.name.endswith(".gz"):
        data = gzip.compress(data, compresslevel=9, mtime=0)
    path.write_bytes(data)
    return path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Write the synthetic windy-grid carbon intensity trace as CSV.")
    parser.add_argument("path", type=Path, help="output file, e.g. examples/carbon/windy-grid.csv.gz")
    parser.add_argument("--days", type=int, default=364)
    parser.add_argument("--step", default="1h", help="resolution: 5m to 1h, dividing an hour (default 1h)")
    parser.add_argument("--seed", type=int, default=SEED)
    args = parser.parse_args(argv)
    trace = windy_grid(days=args.days, step=parse_duration(args.step), seed=args.seed)
    print(f"{write_csv(trace, args.path)}: {len(trace)} rows")


if __name__ == "__main__":
    main()
