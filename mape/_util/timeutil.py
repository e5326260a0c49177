"""Time handling: one convention for the whole engine.

Every datetime inside the engine is timezone-aware UTC, the convention of
sqlmodel's ``UTCDateTime`` columns (which refuse naive values); every boundary
that reads times from outside (files, the CLI) converts with :func:`ensure_utc`. Components take a ``clock``
callable so tests and the demo can freeze or step time.
"""

from __future__ import annotations

import math
import re
from datetime import datetime, timedelta, timezone
from typing import Callable

Clock = Callable[[], datetime]

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)\s*$")
_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def utcnow() -> datetime:
    """The current time, timezone-aware UTC."""
    return datetime.now(timezone.utc)


def ensure_utc(value: datetime) -> datetime:
    """Convert to aware UTC; a naive value is taken to be UTC already.

    >>> ensure_utc(datetime(2026, 1, 1, 12, tzinfo=timezone(timedelta(hours=2))))
    datetime.datetime(2026, 1, 1, 10, 0, tzinfo=datetime.timezone.utc)
    >>> ensure_utc(datetime(2026, 1, 1, 12))
    datetime.datetime(2026, 1, 1, 12, 0, tzinfo=datetime.timezone.utc)
    """
    if value.tzinfo is None:
        return value.replace(tzinfo=timezone.utc)
    return value.astimezone(timezone.utc)


def parse_duration(value: str | int | float | timedelta) -> timedelta:
    """Parse ``"90s"``, ``"15m"``, ``"6h"``, ``"14d"``, ``"2w"`` or seconds into a timedelta.

    >>> parse_duration("6h")
    datetime.timedelta(seconds=21600)
    >>> parse_duration(90)
    datetime.timedelta(seconds=90)
    >>> parse_duration("soon")
    Traceback (most recent call last):
    ...
    ValueError: 'soon' is not a duration; use a number and a unit such as 90s, 15m, 6h, 14d or 2w
    """
    if isinstance(value, timedelta):
        return value
    if isinstance(value, bool):
        raise ValueError(f"{_shown(value)} is not a duration")
    if isinstance(value, (int, float)):
        if value < 0:
            raise ValueError(f"{_shown(value)} is not a duration: it is negative")
        return _seconds(value, value, 1)
    match = _DURATION.match(str(value))
    if not match:
        raise ValueError(
            f"{_shown(value)} is not a duration; use a number and a unit such as 90s, 15m, 6h, 14d or 2w"
        )
    return _seconds(value, match.group(1), _UNITS[match.group(2)])


def _seconds(value: object, number: str | float, unit: float) -> timedelta:
    """A timedelta of ``number * unit`` seconds; NaN, infinities and spans past ``timedelta.max`` are a ``ValueError``.

    >>> parse_duration("99999999999d")
    Traceback (most recent call last):
    ...
    ValueError: '99999999999d' is not a duration: it is too long
    """
    try:
        return timedelta(seconds=float(number) * unit)
    except (OverflowError, ValueError):  # inf and huge values overflow; NaN "cannot convert to integer"
        reason = "not a number" if isinstance(value, float) and math.isnan(value) else "too long"
        raise ValueError(f"{_shown(value)} is not a duration: it is {reason}") from None


def _shown(value: object) -> str:
    """``repr(value)`` cut to 60 characters for a message (an int too long to print is named as such)."""
    if isinstance(value, int) and abs(value) >= 10**60:
        return "a number this large"
    text = repr(value)
    return text if len(text) <= 60 else f"{text[:56]}...{text[-1]}"


def format_duration(value: timedelta) -> str:
    """The shortest exact spelling of a duration in the units :func:`parse_duration` reads.

    >>> format_duration(timedelta(hours=6))
    '6h'
    >>> format_duration(timedelta(seconds=90))
    '90s'
    """
    seconds = value.total_seconds()
    for unit in ("w", "d", "h", "m", "s"):
        size = _UNITS[unit]
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"
