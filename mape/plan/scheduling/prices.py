"""Electricity prices for deferred actions: a published price series read from a file, as their forecast.

Who calls it: :class:`mape.controller.Controller`, whose forecast answers the
planner's ``price`` series (a policy's ``defer.objective: price``, or a mix
with carbon) from ``price.path`` in the settings. Day-ahead markets publish
the next day's hourly (or 15-minute) prices every afternoon, so the file a
job drops there each day *is* the forecast the scheduler should use.

The file has the shape of :func:`mape.plan.scheduling.trace.read_trace`'s
traces (first column a timestamp, second the price; CSV, gzip CSV or
Parquet; 5-minute to hourly), and prices may be negative. It is read again
when it changes (its modification time, size or inode). A file that cannot
be read is reported once per change, naming the file and the row, and gives
no forecast (deferred actions then start at their earliest time, saying so);
the last good series is not used past a change, since a rewritten file means
the prices it held are no longer the ones published.
"""

from __future__ import annotations

import logging
import os
from datetime import datetime
from pathlib import Path

from mape.errors import DataSourceError
from mape.plan.scheduling.trace import Trace, read_trace

__all__ = ["PriceSeries"]

log = logging.getLogger(__name__)


class PriceSeries:
    """The price forecast in a file, re-read when the file changes.

    Parameters
    ----------
    path : str or Path
        The price series (see the module).
    unit : str
        The prices' unit, for messages (e.g. ``EUR/MWh``).
    repeat : bool
        Repeat the series outside its span (a typical week replayed, for demos).

    Examples
    --------
    >>> import tempfile
    >>> from datetime import timezone
    >>> folder = Path(tempfile.mkdtemp())
    >>> _ = (folder / "prices.csv").write_text("time,price\\n2026-03-10T00:00Z,80\\n2026-03-10T01:00Z,-3.5\\n")
    >>> prices = PriceSeries(folder / "prices.csv")
    >>> t0 = datetime(2026, 3, 10, tzinfo=timezone.utc)
    >>> [(t.hour, v) for t, v in prices.forecast(t0, t0.replace(hour=2))]
    [(0, 80.0), (1, -3.5)]
    """

    def __init__(self, path: str | Path, *, unit: str = "EUR/MWh", repeat: bool = False) -> None:
        self.path = Path(path)
        self.unit = unit
        self.repeat = repeat
        self.error: str | None = None  # why the file as it is now gives no forecast
        self._stamp: tuple[int, int, int] | None = None
        self._trace: Trace | None = None

    def __repr__(self) -> str:
        return f"PriceSeries({str(self.path)!r}, unit={self.unit!r})"

    def forecast(self, start: datetime, end: datetime) -> list[tuple[datetime, float]]:
        """The published prices over ``[start, end)`` as ``(time, price)`` steps; ``[]`` when there are none."""
        trace = self._current()
        return [] if trace is None else trace.between(start, end, repeat=self.repeat)

    def _current(self) -> Trace | None:
        try:
            info = os.stat(self.path)
        except OSError as exc:
            return self._failed((0, 0, 0), f"{self.path}: cannot read the price series: {exc.strerror or exc}")
        stamp = (info.st_mtime_ns, info.st_size, info.st_ino)
        if stamp == self._stamp:
            return self._trace
        try:
            trace = read_trace(self.path, what="price", unit=self.unit, allow_negative=True)
        except DataSourceError as exc:
            return self._failed(stamp, str(exc))
        self._stamp, self._trace, self.error = stamp, trace, None
        log.info("Price series read: %s", trace)
        return trace

    def _failed(self, stamp: tuple[int, int, int], message: str) -> None:
        if stamp != self._stamp or message != self.error:  # once per change of the file
            log.error("%s; deferred actions weighing price start at their earliest time", message)
        self._stamp, self._trace, self.error = stamp, None, message
        return None
