"""Recorded series of carbon intensity or price, read from CSV or Parquet onto a regular grid.

What it does: :func:`read_trace` reads a file whose first column is a
timestamp and whose second is a number (gCO2/kWh for carbon intensity;
currency per MWh for price), whatever the header names, into a
:class:`Trace`: values every ``step`` from ``start``. This is the shape of the
traces that grid operators and Electricity Maps publish, and of those the
carbon-aware scheduling literature replays.

The rules, each broken one an error naming the file, the row and the value:

* CSV (``.csv``, or gzip-compressed ``.csv.gz``) or Parquet (``.parquet``,
  ``.pq``). A CSV file may have header rows (any names) and ``#`` comment
  lines before its data; further columns are ignored.
* Timestamps are ISO 8601 (``2026-01-05T00:00:00Z``, ``2026-01-05 00:00``,
  with an offset or without one, which means UTC) or Unix seconds (or
  milliseconds). Rows are sorted by time, without duplicates.
* Values are finite and not negative (prices may be negative: pass
  ``allow_negative``).
* The resolution, the most common gap between rows, is from 5 minutes to 1
  hour and divides an hour (5, 10, 12, 15, 20, 30 or 60 minutes). Every row is
  on that grid. A missing row is a longer step: the previous value holds (a
  step function), up to ``max_gap``; a longer gap is an error.

Who calls it: ``mape carbon plan`` and ``mape carbon backtest``,
:mod:`mape.plan.scheduling.backtest`, the benchmark and the tests.
"""

from __future__ import annotations

import csv
import gzip
import io
import math
import statistics
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import numpy as np

from mape._util.timeutil import ensure_utc, format_duration
from mape.errors import DataSourceError
from mape.plan.scheduling.window import Steps

__all__ = ["MAX_STEP", "MIN_STEP", "Trace", "read_trace"]

MIN_STEP = timedelta(minutes=5)
MAX_STEP = timedelta(hours=1)
_PARQUET = (".parquet", ".pq")


@dataclass(frozen=True, eq=False)
class Trace:
    """A series on a regular grid: ``values[i]`` holds over ``[start + i * step, start + (i + 1) * step)``.

    Parameters
    ----------
    start : datetime
        Time of the first value (aware UTC).
    step : timedelta
        The resolution.
    values : numpy.ndarray
        One float per step.
    source : str
        Where it came from (the file's name), for messages and results.
    filled : int
        Steps that had no row of their own and hold the previous row's value.

    Examples
    --------
    >>> day = datetime(2026, 3, 10, tzinfo=timezone.utc)
    >>> trace = Trace(day, timedelta(minutes=30), np.array([200.0, 150.0, 300.0]), "example")
    >>> trace.end.isoformat(), trace.index(day + timedelta(minutes=45)), trace.time(2).isoformat()
    ('2026-03-10T01:30:00+00:00', 1, '2026-03-10T01:00:00+00:00')
    """

    start: datetime
    step: timedelta
    values: np.ndarray
    source: str = "trace"
    filled: int = 0

    def __len__(self) -> int:
        return len(self.values)

    def __str__(self) -> str:
        return (f"{self.source}: {len(self)} steps of {format_duration(self.step)} from {self.start.isoformat()} "
                f"to {self.end.isoformat()}")

    @property
    def end(self) -> datetime:
        return self.start + self.step * len(self.values)

    @property
    def steps_per_day(self) -> int:
        return int(timedelta(days=1) / self.step)

    def index(self, at: datetime) -> int:
        """The index of the step containing ``at`` (it may lie outside the trace)."""
        return int((ensure_utc(at) - self.start) // self.step)

    def time(self, index: int) -> datetime:
        return self.start + index * self.step

    def steps(self) -> Steps:
        """The trace as a :class:`~mape.plan.scheduling.window.Steps` step function."""
        return Steps.regular(self.start, self.step, self.values)

    def between(self, start: datetime, end: datetime, *, repeat: bool = False) -> list[tuple[datetime, float]]:
        """The steps that overlap ``[start, end)`` as ``(time, value)``, the first beginning at or before ``start``.

        With ``repeat``, the trace repeats outside its span (period: its whole
        span); without, times outside it have no value.

        >>> day = datetime(2026, 3, 10, tzinfo=timezone.utc)
        >>> trace = Trace(day, timedelta(hours=1), np.array([50.0, -5.0]), "prices")
        >>> [(t.hour, v) for t, v in trace.between(day + timedelta(minutes=30), day + timedelta(hours=3), repeat=True)]
        [(0, 50.0), (1, -5.0), (2, 50.0)]
        """
        first, last = self.index(start), self.index(ensure_utc(end) - timedelta(microseconds=1))
        n = len(self.values)
        if not repeat:
            first, last = max(first, 0), min(last, n - 1)
        return [(self.time(i), float(self.values[i % n])) for i in range(first, last + 1)]

    def resampled(self, step: timedelta) -> "Trace":
        """The same step function on a finer grid (``step`` dividing this one's): each value repeated."""
        if step <= timedelta(0) or self.step % step:
            raise ValueError(f"resampling needs a step that divides {format_duration(self.step)}, "
                             f"got {format_duration(step)}")
        return Trace(self.start, step, np.repeat(self.values, self.step // step), self.source, self.filled)


def read_trace(path: str | Path, *, what: str = "intensity", unit: str = "gCO2/kWh", allow_negative: bool = False,
               max_gap: timedelta = timedelta(hours=6)) -> Trace:
    """Read a trace from CSV or Parquet onto its regular grid (see the module for the rules).

    Parameters
    ----------
    path : str or Path
        The file.
    what, unit : str
        What the second column holds, for messages (``price``, ``EUR/MWh``).
    allow_negative : bool
        Accept negative values (electricity prices can be).
    max_gap : timedelta
        The longest gap between two rows that is filled by holding a value.

    Raises
    ------
    DataSourceError
        When the file cannot be read or breaks a rule; the message names the
        file, the row (CSV: line number; Parquet: 1-based row) and the value.
    """
    path = Path(path)
    name = path.name.lower()
    if name.endswith(_PARQUET):
        rows, where = _parquet_rows(path), "row"
    elif name.endswith((".csv", ".csv.gz")):
        rows, where = _csv_rows(path), "line"
    else:
        raise DataSourceError(f"{path}: unknown format; a trace is .csv, .csv.gz or .parquet")
    numbers: list[int] = []
    stamps: list[float] = []
    values: list[float] = []
    try:
        for number, stamp, value in rows:
            if not stamps and where == "line" and _is_header(stamp, value):
                continue
            time = _timestamp(stamp, path, where, number)
            values.append(_value(value, path, where, number, what, unit, allow_negative))
            if stamps and time <= stamps[-1]:
                verb = "duplicates" if time == stamps[-1] else "is before"
                raise DataSourceError(
                    f"{path}, {where} {number}: timestamp {_iso(time)} {verb} {where} {numbers[-1]}'s "
                    f"({_iso(stamps[-1])}); rows must be sorted by time without duplicates")
            numbers.append(number)
            stamps.append(time)
    except OSError as exc:
        raise DataSourceError(f"{path}: cannot read the trace: {exc.strerror or exc}") from None
    except (UnicodeDecodeError, csv.Error, EOFError, gzip.BadGzipFile) as exc:
        raise DataSourceError(f"{path}: not a readable CSV file: {exc}") from None
    if len(stamps) < 2:
        raise DataSourceError(f"{path}: a trace needs at least two rows, found {len(stamps)}")
    return _on_grid(path, where, numbers, np.array(stamps), np.array(values), max_gap)


def _on_grid(path: Path, where: str, numbers: list[int], stamps: np.ndarray, values: np.ndarray,
             max_gap: timedelta) -> Trace:
    gaps = np.round(np.diff(stamps), 6)
    step_s = float(statistics.mode(gaps.tolist()))  # the most common gap: robust to a few missing rows
    step = timedelta(seconds=step_s)
    if not MIN_STEP <= step <= MAX_STEP or 3600 % step_s:
        raise DataSourceError(
            f"{path}: the resolution (the most common gap between rows) is {format_duration(step)}; a trace's "
            "resolution must be from 5 minutes to 1 hour and divide an hour (5, 10, 12, 15, 20, 30 or 60 minutes)")
    offsets = (stamps - stamps[0]) / step_s
    off_grid = np.flatnonzero(np.abs(offsets - np.round(offsets)) > 1e-6)
    if len(off_grid):
        k = int(off_grid[0])
        raise DataSourceError(
            f"{path}, {where} {numbers[k]}: timestamp {_iso(stamps[k])} is off the trace's "
            f"{format_duration(step)} grid (which starts at {_iso(stamps[0])})")
    too_long = np.flatnonzero(gaps > max_gap.total_seconds())
    if len(too_long):
        k = int(too_long[0])
        raise DataSourceError(
            f"{path}, {where} {numbers[k + 1]}: a gap of {format_duration(timedelta(seconds=float(gaps[k])))} "
            f"after {where} {numbers[k]} ({_iso(stamps[k])}), longer than {format_duration(max_gap)}; "
            "fill the trace or cut it there")
    index = np.round(offsets).astype(int)
    held = np.zeros(index[-1] + 1, dtype=int)
    held[index] = np.arange(len(index))
    held = np.maximum.accumulate(held)  # each step holds the latest row at or before it
    grid = values[held]
    start = datetime.fromtimestamp(float(stamps[0]), timezone.utc)
    return Trace(start, step, grid.astype(float), path.name, filled=int(len(grid) - len(index)))


def _iso(seconds: float) -> str:
    return datetime.fromtimestamp(float(seconds), timezone.utc).isoformat()


def _csv_rows(path: Path) -> Iterator[tuple[int, Any, Any]]:
    raw = path.read_bytes()
    if path.name.lower().endswith(".gz"):
        raw = gzip.decompress(raw)
    reader = csv.reader(io.StringIO(raw.decode("utf-8-sig"), newline=""))
    for row in reader:
        if not row or all(not cell.strip() for cell in row) or row[0].lstrip().startswith("#"):
            continue
        if len(row) < 2:
            raise DataSourceError(f"{path}, line {reader.line_num}: expected a timestamp and a value, found "
                                  f"{len(row)} column ({row[0]!r})")
        yield reader.line_num, row[0].strip(), row[1].strip()


def _parquet_rows(path: Path) -> Iterable[tuple[int, Any, Any]]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except (OSError, pa.ArrowException) as exc:  # missing file, or not Parquet
        raise DataSourceError(f"{path}: cannot read the trace: {exc}") from None
    if table.num_columns < 2:
        raise DataSourceError(f"{path}: expected a timestamp and a value column, found {table.num_columns}")
    stamps, values = table.column(0).to_pylist(), table.column(1).to_pylist()
    return zip(range(1, len(stamps) + 1), stamps, values)


def _is_header(stamp: Any, value: Any) -> bool:
    """A row before any data whose cells are neither a time nor a number is a header."""
    try:
        _parse_time(stamp)
        return False
    except (TypeError, ValueError, OverflowError, OSError):
        pass  # not a time: a header only if the value is not a number either
    try:
        float(value)
        return False
    except (TypeError, ValueError):
        return True


def _parse_time(stamp: Any) -> float:
    if isinstance(stamp, datetime):
        return ensure_utc(stamp).timestamp()
    text = str(stamp).strip()
    try:
        number = float(text)
    except ValueError:
        return ensure_utc(datetime.fromisoformat(text)).timestamp()
    if not math.isfinite(number) or number < 1e8:  # a year, a small count: not a Unix time
        raise ValueError(text)
    return number / 1000 if number > 1e11 else number  # more than 1e11 seconds is past the year 5000: milliseconds


def _timestamp(stamp: Any, path: Path, where: str, number: int) -> float:
    try:
        return _parse_time(stamp)
    except (TypeError, ValueError, OverflowError, OSError):
        shown = "missing" if stamp in (None, "") else repr(stamp)
        raise DataSourceError(f"{path}, {where} {number}: timestamp {shown} is not an ISO 8601 time such as "
                              "2026-03-10T12:00:00Z, nor Unix seconds") from None


def _value(value: Any, path: Path, where: str, number: int, what: str, unit: str, allow_negative: bool) -> float:
    if value is None or value == "":
        raise DataSourceError(f"{path}, {where} {number}: the {what} is missing")
    try:
        result = float(value)
    except (TypeError, ValueError):
        raise DataSourceError(f"{path}, {where} {number}: {what} {value!r} is not a number ({unit})") from None
    if isinstance(value, bool) or not math.isfinite(result) or (result < 0 and not allow_negative):
        kind = "finite number" if allow_negative else "finite, non-negative number"
        raise DataSourceError(f"{path}, {where} {number}: {what} {value!r} is not a {kind} ({unit})")
    return result
