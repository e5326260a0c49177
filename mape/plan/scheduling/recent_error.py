"""A forecaster's recent error on deferral: by how much its predicted gains have overstated the realised ones lately.

What it does: a *shadow* is the scheduler's search for the best start, made on
the forecast of its time as if a job had arrived, and scored once its windows
have passed: its **predicted gain** is the forecast objective of starting at
once minus that of the chosen window; its **realised gain** is the same
difference on the actual series (0 when it predicted no gain: it would not
have deferred). :func:`recent_error` compares a new predicted gain with the
shadows of the look-back: of those issued within ``match`` of the same time
of day (all of them, when fewer than :data:`MIN_SHADOWS` are), the
:data:`NEIGHBOURS` whose predicted gains are nearest give the expected
realised gain (their mean, less :data:`CONFIDENCE` standard errors); the
recent error is the predicted gain minus that, at least 0. A deferral is worth
it only when its predicted gain exceeds the recent error. With fewer than
:data:`MIN_SHADOWS` shadows the error is unknown (``inf``).

:class:`Evidence` holds the scored shadows of one kind of search (the
planner's, read from the knowledge base) and answers :meth:`Evidence.error`.

The rule, and why not a simpler one, is in ``docs/DESIGN.md`` (Carbon-aware
scheduling, the guard). Pure: no knowledge base, no forecasts.

Who calls it: :mod:`mape.plan.scheduling.backtest` (shadows replayed every
``replan``) and the live deferral (:mod:`mape.plan.scheduling.deferral`, with
the :class:`Evidence` the planner builds from stored shadows).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import numpy as np

__all__ = ["CONFIDENCE", "MATCH", "MIN_SHADOWS", "NEIGHBOURS", "Evidence", "RecentError", "clock_seconds",
           "recent_error"]

#: Shadows issued this close to the same time of day are compared first.
MATCH = timedelta(minutes=30)
#: Fewer scored shadows than this: the error is unknown (no evidence).
MIN_SHADOWS = 10
#: How many standard errors of the expected realised gain are held back.
CONFIDENCE = 1.0
#: How many shadows, nearest by predicted gain, give the expected realised gain.
NEIGHBOURS = 15

_DAY = 86400


def clock_seconds(moment: datetime) -> int:
    """Seconds since midnight (of ``moment``'s own time zone: UTC for the scheduler's times).

    >>> from datetime import timezone
    >>> clock_seconds(datetime(2026, 3, 10, 13, 30, 5, tzinfo=timezone.utc))
    48605
    """
    return moment.hour * 3600 + moment.minute * 60 + moment.second


@dataclass(frozen=True)
class RecentError:
    """The recent error for one predicted gain, and what it rests on.

    Attributes
    ----------
    error : float
        By how much the predicted gain overstates the realised one (at least
        0; ``inf`` without evidence), in the objective's unit.
    scored : int
        Scored shadows in the look-back.
    neighbours : int
        Shadows the expected realised gain was averaged over (0 without evidence).
    expected : float
        The expected realised gain before the confidence margin (``nan``
        without evidence).
    """

    error: float
    scored: int
    neighbours: int = 0
    expected: float = math.nan

    @property
    def known(self) -> bool:
        """Whether there were enough scored shadows (at least :data:`MIN_SHADOWS`)."""
        return math.isfinite(self.error)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready (``None`` for an unknown error or expected gain)."""
        return {"recent_error": round(self.error, 6) if self.known else None, "scored": self.scored,
                "needed": MIN_SHADOWS, "neighbours": self.neighbours,
                "expected_gain": round(self.expected, 6) if math.isfinite(self.expected) else None}


def recent_error(gain: float, clock: float, *, clocks: Any, predicted: Any, realised: Any,
                 match: float = MATCH.total_seconds()) -> RecentError:
    """By how much a predicted ``gain`` issued at time of day ``clock`` overstates the realised one (see the module).

    Parameters
    ----------
    gain : float
        The predicted gain of the decision at hand.
    clock : float
        Its time of day, seconds since midnight (:func:`clock_seconds`).
    clocks, predicted, realised : array-like of float
        The scored shadows of the look-back: time of day, predicted and
        realised gain; the same length.
    match : float
        Seconds either side of ``clock`` within which shadows count as the
        same time of day.

    Returns
    -------
    RecentError
        The error (``inf`` with fewer than :data:`MIN_SHADOWS` shadows) and
        what it rests on.

    Examples
    --------
    Twelve shadows at 03:00 that each predicted 50 g and realised 40 to 51 g:

    >>> realised = [40, 45, 50, 42, 48, 44, 46, 51, 43, 47, 49, 41]
    >>> found = recent_error(50.0, 3 * 3600, clocks=[3 * 3600] * 12, predicted=[50.0] * 12, realised=realised)
    >>> round(found.error, 2), found.scored, found.neighbours
    (5.54, 12, 12)
    >>> recent_error(50.0, 0, clocks=[0] * 3, predicted=[50.0] * 3, realised=[50.0] * 3).known
    False
    """
    predicted = np.asarray(predicted, dtype=float)
    realised = np.asarray(realised, dtype=float)
    scored = len(predicted)
    if scored < MIN_SHADOWS:
        return RecentError(math.inf, scored)
    distance = np.abs(np.asarray(clocks, dtype=float) - clock)
    near = np.minimum(distance, _DAY - distance) <= match
    if near.sum() >= MIN_SHADOWS:
        predicted, realised = predicted[near], realised[near]
    k = min(NEIGHBOURS, len(predicted))
    nearest = np.argsort(np.abs(predicted - gain), kind="stable")[:k]
    realised = realised[nearest]
    expected = float(realised.mean())
    uncertainty = float(realised.std(ddof=1)) / math.sqrt(k) if k > 1 else math.inf
    return RecentError(max(0.0, gain - expected + CONFIDENCE * uncertainty), scored, k, expected)


@dataclass(frozen=True)
class Evidence:
    """The scored shadows of one kind of search, oldest first: what :meth:`error` rests on.

    Parameters
    ----------
    starts : tuple of datetime
        Each shadow's earliest start (its time of day is what is matched).
    predicted, realised : tuple of float
        Each shadow's predicted and realised gain.
    match : timedelta
        Within this of the same time of day, shadows are compared first.

    Examples
    --------
    >>> from datetime import timezone
    >>> t0 = datetime(2026, 3, 1, 3, tzinfo=timezone.utc)
    >>> days = [t0 + timedelta(days=d) for d in range(12)]
    >>> evidence = Evidence.from_rows((t, 50.0, 10.0) for t in days)
    >>> evidence.error(t0 + timedelta(days=12), 50.0).error, len(evidence)
    (40.0, 12)
    """

    starts: tuple[datetime, ...] = ()
    predicted: tuple[float, ...] = ()
    realised: tuple[float, ...] = ()
    match: timedelta = MATCH

    def __post_init__(self) -> None:
        if not len(self.starts) == len(self.predicted) == len(self.realised):
            raise ValueError(f"evidence needs as many starts ({len(self.starts)}) as predicted "
                             f"({len(self.predicted)}) and realised gains ({len(self.realised)})")

    @classmethod
    def from_rows(cls, rows: Iterable[tuple[datetime, float, float]], *, match: timedelta = MATCH) -> "Evidence":
        """From ``(start, predicted gain, realised gain)`` rows, oldest first."""
        listed = list(rows)
        return cls(starts=tuple(r[0] for r in listed), predicted=tuple(float(r[1]) for r in listed),
                   realised=tuple(float(r[2]) for r in listed), match=match)

    def __len__(self) -> int:
        return len(self.starts)

    def error(self, at: datetime, gain: float) -> RecentError:
        """The recent error of a predicted ``gain`` for a window starting at ``at`` (:func:`recent_error`)."""
        return recent_error(gain, clock_seconds(at), clocks=[clock_seconds(s) for s in self.starts],
                            predicted=self.predicted, realised=self.realised, match=self.match.total_seconds())
