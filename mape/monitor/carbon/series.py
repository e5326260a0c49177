"""Grid carbon intensity from a time series file: a recorded trace, or the shipped synthetic one.

Who calls it: :func:`mape.monitor.carbon.provider_from_config` for
``carbon.provider: series``; the demo, the tests and backtests of
carbon-aware policies use it with ``examples/carbon/diurnal-grid.csv``.

The file is CSV or Parquet (by its suffix). Its first column is a timestamp
(ISO 8601, with or without an offset; a naive time is UTC), its second a
numeric intensity in gCO2/kWh; further columns are ignored and header names do
not matter (a CSV file may also have no header row). Rows must be sorted by
time without duplicates. Any resolution works: each value holds until the
next row (a step function), the last one for the series' typical step (the
median gap between rows).

**A trace knows the future.** :meth:`SeriesProvider.forecast` returns the
trace's own values, i.e. a *perfect forecast*. That is right for the demo and
for backtests that bound what carbon-aware scheduling could gain ("perfect
foresight"); it overstates what a live forecast, which errs, would deliver.
"""

from __future__ import annotations

import csv
import math
import statistics
from collections.abc import Iterable, Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from mape._util.timeutil import ensure_utc
from mape.errors import DataSourceError
from mape.monitor.carbon.provider import IntensityPoint, steps_between

__all__ = ["SeriesProvider"]

_PARQUET_SUFFIXES = (".parquet", ".pq")


class SeriesProvider:
    """Carbon intensity read from a CSV or Parquet time series, as a step function.

    Parameters
    ----------
    path : str or Path
        The file; ``.csv`` or ``.parquet``.
    repeat : bool
        Outside the series' span, repeat it (period: the span, first row to
        the end of the last step). A trace of whole weeks keeps its weekly
        pattern when repeated; the shipped 364-day trace is 52 weeks. Without
        ``repeat``, times outside the span have no intensity (``None``, ``[]``).

    Raises
    ------
    DataSourceError
        When the file cannot be read, or a row has an unreadable timestamp, a
        missing, non-numeric, non-finite or negative intensity, or a time not
        after the previous row's; the message names the file and the row
        (CSV: its line number; Parquet: its 1-based row number).

    Examples
    --------
    >>> from datetime import timezone
    >>> from examples.carbon import DIURNAL_GRID
    >>> grid = SeriesProvider(DIURNAL_GRID)
    >>> grid.step, grid.start.isoformat()
    (datetime.timedelta(seconds=1800), '2026-01-05T00:00:00+00:00')
    >>> now = datetime(2026, 3, 10, 12, 10, tzinfo=timezone.utc)
    >>> grid.current(now).time.isoformat()
    '2026-03-10T12:00:00+00:00'
    >>> len(grid.forecast(now, now + timedelta(hours=2)))
    5
    """

    def __init__(self, path: str | Path, *, repeat: bool = False) -> None:
        self.path = Path(path)
        self.repeat = repeat
        self.source = f"series:{self.path.name}"
        self._points = _read(self.path, self.source)
        self._times = [p.time for p in self._points]
        gaps = [b - a for a, b in zip(self._times, self._times[1:])]
        self.step: timedelta = statistics.median_low(gaps)
        self.start: datetime = self._times[0]
        self.end: datetime = self._times[-1] + self.step
        self._period = self.end - self.start

    def __repr__(self) -> str:
        return f"SeriesProvider({str(self.path)!r}, repeat={self.repeat})"

    @property
    def points(self) -> tuple[IntensityPoint, ...]:
        """Every row of the series, in time order."""
        return tuple(self._points)

    def current(self, at: datetime) -> IntensityPoint | None:
        """The value of the row whose step contains ``at``; ``None`` outside the span (unless ``repeat``)."""
        at = ensure_utc(at)
        offset = timedelta(0)
        if self.repeat:
            offset = ((at - self.start) // self._period) * self._period
        elif not self.start <= at < self.end:
            return None
        found = steps_between(self._points, at - offset, at - offset + timedelta(microseconds=1))
        return _shifted(found[0], offset) if found else None

    def forecast(self, start: datetime, end: datetime) -> list[IntensityPoint]:
        """The series' own values over ``[start, end)``: a perfect forecast (see the module's docstring)."""
        start, end = ensure_utc(start), ensure_utc(end)
        if end <= start:
            return []
        if not self.repeat:
            if start >= self.end or end <= self.start:
                return []
            return steps_between(self._points, start, end)
        points: list[IntensityPoint] = []
        cycle = (start - self.start) // self._period
        while self.start + cycle * self._period < end:
            offset = cycle * self._period
            low, high = max(start - offset, self.start), min(end - offset, self.end)
            points += [_shifted(p, offset) for p in steps_between(self._points, low, high)]
            cycle += 1
        return points


def _shifted(point: IntensityPoint, offset: timedelta) -> IntensityPoint:
    return point if not offset else IntensityPoint(point.time + offset, point.g_per_kwh, point.source)


def _read(path: Path, source: str) -> list[IntensityPoint]:
    if path.suffix.lower() in _PARQUET_SUFFIXES:
        rows, where = _parquet_rows(path), "row"
    elif path.suffix.lower() == ".csv":
        rows, where = _csv_rows(path), "line"
    else:
        raise DataSourceError(f"{path}: unknown format {path.suffix!r}; a carbon intensity series is .csv or .parquet")
    points: list[IntensityPoint] = []
    previous: tuple[int, datetime] | None = None
    try:
        for index, (number, stamp, value) in enumerate(rows):
            if index == 0 and where == "line" and _is_header(stamp, value):
                continue
            time = _timestamp(stamp, path, where, number)
            g_per_kwh = _intensity(value, path, where, number)
            if previous is not None and time <= previous[1]:
                what = "duplicates" if time == previous[1] else "is before"
                raise DataSourceError(
                    f"{path}, {where} {number}: timestamp {time.isoformat()} {what} {where} {previous[0]}'s "
                    f"({previous[1].isoformat()}); rows must be sorted by time without duplicates")
            points.append(IntensityPoint(time, g_per_kwh, source))
            previous = (number, time)
    except OSError as exc:
        raise DataSourceError(f"{path}: cannot read the carbon intensity series: {exc.strerror or exc}") from None
    except (UnicodeDecodeError, csv.Error) as exc:
        raise DataSourceError(f"{path}: not a readable CSV file: {exc}") from None
    if len(points) < 2:
        raise DataSourceError(f"{path}: a carbon intensity series needs at least two rows, found {len(points)}")
    return points


def _csv_rows(path: Path) -> Iterator[tuple[int, Any, Any]]:
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.reader(handle)
        for row in reader:
            if not row or all(not cell.strip() for cell in row):
                continue
            if len(row) < 2:
                raise DataSourceError(f"{path}, line {reader.line_num}: expected a timestamp and an intensity, "
                                      f"found {len(row)} column")
            yield reader.line_num, row[0].strip(), row[1].strip()


def _parquet_rows(path: Path) -> Iterable[tuple[int, Any, Any]]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except OSError as exc:  # missing file, or not Parquet (pyarrow's ArrowInvalid is an OSError too)
        raise DataSourceError(f"{path}: cannot read the carbon intensity series: {exc}") from None
    except pa.ArrowException as exc:
        raise DataSourceError(f"{path}: cannot read the carbon intensity series: {exc}") from None
    if table.num_columns < 2:
        raise DataSourceError(f"{path}: expected a timestamp and an intensity column, found {table.num_columns}")
    stamps, values = table.column(0).to_pylist(), table.column(1).to_pylist()
    return zip(range(1, len(stamps) + 1), stamps, values)


def _is_header(stamp: Any, value: Any) -> bool:
    """A first CSV row whose cells are neither a timestamp nor a number is a header."""
    try:
        datetime.fromisoformat(stamp)
        return False
    except (TypeError, ValueError):
        pass
    try:
        float(value)
        return False
    except (TypeError, ValueError):
        return True


def _timestamp(stamp: Any, path: Path, where: str, number: int) -> datetime:
    if isinstance(stamp, datetime):
        return ensure_utc(stamp)
    try:
        return ensure_utc(datetime.fromisoformat(str(stamp)))
    except (TypeError, ValueError):
        shown = "missing" if stamp in (None, "") else repr(stamp)
        raise DataSourceError(f"{path}, {where} {number}: timestamp {shown} is not an ISO 8601 time "
                              "such as 2026-03-10T12:00:00Z") from None


def _intensity(value: Any, path: Path, where: str, number: int) -> float:
    if value is None or value == "":
        raise DataSourceError(f"{path}, {where} {number}: the intensity is missing")
    try:
        number_value = float(value)
    except (TypeError, ValueError):
        raise DataSourceError(f"{path}, {where} {number}: intensity {value!r} is not a number (gCO2/kWh)") from None
    if isinstance(value, bool) or not math.isfinite(number_value) or number_value < 0:
        raise DataSourceError(f"{path}, {where} {number}: intensity {value!r} is not a finite, non-negative "
                              "number (gCO2/kWh)")
    return number_value
