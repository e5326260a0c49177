"""One scheduling request on recorded series: what ``mape carbon plan`` answers.

What it does: :func:`plan_job` reads the carbon intensity trace (and a price
trace, when the objective weighs price), checks the request and returns the
best window as a JSON-ready dict. The trace stands for a perfect forecast.

The request's times follow the usual convention of carbon-aware schedulers
(the Green Software Foundation's Carbon Aware SDK, for one): the job runs
inside ``[earliest, deadline]``, so it must have *finished* by ``deadline`` and
its latest start is ``deadline - duration``. (A policy's ``defer.deadline`` is
the latest *start*: the planner runs a deferred action then, whatever happens.)

Who calls it: ``mape carbon plan`` (:mod:`mape.cli`); tests.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from mape._util.timeutil import ensure_utc, format_duration, parse_duration
from mape.errors import ScheduleError
from mape.plan.scheduling.trace import read_trace
from mape.plan.scheduling.window import OBJECTIVES, Steps, best_window, objective_weights

__all__ = ["parse_moment", "parse_objective", "plan_job"]


def parse_objective(text: str) -> dict[str, float]:
    """``carbon``, ``price``, or weights such as ``carbon=0.7,price=0.3``.

    >>> parse_objective("carbon=0.7, price=0.3")
    {'carbon': 0.7, 'price': 0.3}
    >>> parse_objective("cheap")
    Traceback (most recent call last):
    ...
    mape.errors.ScheduleError: unknown objective 'cheap'; use carbon, price or a mix of them
    """
    text = text.strip()
    if "=" not in text:
        return objective_weights(text)
    weights: dict[str, Any] = {}
    for part in text.split(","):
        name, _, value = part.partition("=")
        try:
            weights[name.strip()] = float(value)
        except ValueError:
            raise ScheduleError(f"objective {text!r}: weight {value.strip()!r} of {name.strip()!r} is not a "
                                f"number; write e.g. carbon=0.7,price=0.3") from None
    return objective_weights(weights)


def parse_moment(option: str, value: str, *, after: datetime | None = None) -> datetime:
    """An ISO 8601 time (naive means UTC), or with ``after``, a duration after it (``8h``)."""
    try:
        return ensure_utc(datetime.fromisoformat(value.strip()))
    except ValueError:
        pass  # not an ISO 8601 time: perhaps a duration after ``after``, below
    if after is not None:
        try:
            return after + parse_duration(value)
        except ValueError:
            pass  # not a duration either: the error below names both spellings
    also = " or a duration after --earliest such as 8h" if after is not None else ""
    raise ScheduleError(f"{option} {value!r} is not a time; use ISO 8601 such as 2026-03-10T12:00:00Z{also}")


def plan_job(trace: str | Path, *, duration: timedelta, earliest: datetime, deadline: datetime,
             price: str | Path | None = None, objective: str | Mapping[str, float] = "carbon") -> dict[str, Any]:
    """The best window for a job of ``duration`` inside ``[earliest, deadline]`` on recorded series.

    Raises
    ------
    DataSourceError
        When a trace cannot be read (naming the file, the row and the value).
    ScheduleError
        When the deadline is before the earliest start, the job is longer
        than the window, the objective weighs price but no price trace is
        given, or a trace does not cover the window's start.
    """
    weights = objective_weights(objective)
    if duration <= timedelta(0):
        raise ScheduleError(f"--duration must be longer than 0, got {format_duration(duration)}")
    earliest, deadline = ensure_utc(earliest), ensure_utc(deadline)
    if deadline < earliest:
        raise ScheduleError(f"the deadline {deadline.isoformat()} is before the earliest start {earliest.isoformat()}")
    if duration > deadline - earliest:
        raise ScheduleError(f"a {format_duration(duration)} job does not fit between {earliest.isoformat()} and "
                            f"{deadline.isoformat()} ({format_duration(deadline - earliest)})")
    series: dict[str, Steps] = {}
    sources: dict[str, str] = {}
    if weights.get("carbon", 0) > 0:
        carbon = read_trace(trace)
        series["carbon"], sources["carbon"] = carbon.steps(), str(carbon)
    if weights.get("price", 0) > 0:
        if price is None:
            raise ScheduleError("the objective weighs price; give the price trace with --price FILE")
        prices = read_trace(price, what="price", unit="per MWh", allow_negative=True)
        series["price"], sources["price"] = prices.steps(), str(prices)
    window = best_window(series, duration=duration, earliest=earliest, latest_start=deadline - duration,
                         weights=weights)
    return {"objective": {name: weights[name] for name in OBJECTIVES if name in weights},
            "deadline": deadline.isoformat(), **window.as_dict(), "series": sources}
