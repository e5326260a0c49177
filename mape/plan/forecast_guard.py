"""The evidence behind live deferral's guard: shadow searches recorded every hour, scored once their windows pass.

What it does: for every kind of search the policies' ``defer`` blocks use
(objective, duration, window: :func:`~mape.plan.scheduling.shadow.search_key`)
with a guard, :meth:`ForecastGuard.update` makes, once per ``cadence`` (one
hour, as in the backtest), the search a deferred action would get on the
forecast of the tick, whether an action arrives or not, and stores it
(:class:`knowledge.tables.DeferralShadow`). Pending searches whose windows
have both passed are scored on the actual series:

* ``carbon``: the ``carbon.intensity`` observations the Monitor stores every
  tick (the intensity it saw, whatever the provider), each holding until the
  next; windows with a gap of more than ``max_gap`` (2 h) between
  observations, or none in force at their start, have no actual;
* ``price``: the published prices (the forecast function over the past
  window: what a day-ahead market publishes is what is paid); a file that no
  longer covers the window has no actual.

A search without actuals ``grace`` (6 h) after it was due is marked
``unscorable`` and counts for nothing; bad values (null, not finite) are left
out of the actual series. Rows older than ``retention`` (35 days) are removed.
The scored searches of the last ``lookback`` (28 days) are returned as
:class:`~mape.plan.scheduling.recent_error.Evidence` by kind, for
:func:`~mape.plan.scheduling.deferral.choose_start` and
:func:`~mape.plan.scheduling.deferral.reconsider` to compare a predicted gain
with the forecaster's recent error.

Who calls it: :meth:`mape.plan.planner.Planner.plan`, once per pass, when a
forecast is configured; tests.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any

from sqlmodel import Session

from knowledge import forecasts
from knowledge.tables import DeferralShadow
from mape._util.timeutil import ensure_utc, format_duration
from mape.errors import InvalidParameterError
from mape.plan.policy import Defer
from mape.plan.scheduling.deferral import Forecast, forecast_steps
from mape.plan.scheduling.recent_error import MATCH, Evidence
from mape.plan.scheduling.shadow import Shadow, observed_mean, realised_gain, search_key, shadow_search
from mape.plan.scheduling.window import Steps

__all__ = ["ACTUAL_METRICS", "ForecastGuard", "shadow_row"]

logger = logging.getLogger(__name__)

#: The observation whose stored values are a series' actuals (series not named here: the forecast over the past).
ACTUAL_METRICS: dict[str, str] = {"carbon": "carbon.intensity"}


class ForecastGuard:
    """Records, scores and reads back the shadow searches of live deferral (see the module).

    Parameters
    ----------
    cadence : timedelta
        One shadow search per kind per period of this length (the first tick in it).
    lookback : timedelta
        How far back the evidence reaches (issue times).
    retention : timedelta
        Shadow searches issued longer ago than this are removed; at least ``lookback``.
    grace : timedelta
        How long after its windows passed a search may wait for its actuals.
    max_gap : timedelta
        The longest gap between two observations of an actual series.
    batch : int
        At most this many searches are scored per pass (the oldest first).

    Raises
    ------
    InvalidParameterError
        When a duration is not positive (``grace``: negative), ``retention``
        is shorter than ``lookback`` or ``batch`` is below 1.

    Examples
    --------
    >>> ForecastGuard()
    ForecastGuard(cadence=1h, lookback=4w, retention=5w)
    """

    def __init__(self, *, cadence: timedelta = timedelta(hours=1), lookback: timedelta = timedelta(days=28),
                 retention: timedelta = timedelta(days=35), grace: timedelta = timedelta(hours=6),
                 max_gap: timedelta = timedelta(hours=2), batch: int = 100) -> None:
        for name, value in (("cadence", cadence), ("lookback", lookback), ("max_gap", max_gap)):
            if value <= timedelta(0):
                raise InvalidParameterError.for_parameter(name, "ForecastGuard", "longer than 0",
                                                          format_duration(value))
        if grace < timedelta(0):
            raise InvalidParameterError.for_parameter("grace", "ForecastGuard", "at least 0", format_duration(grace))
        if retention < lookback:
            raise InvalidParameterError.for_parameter(
                "retention", "ForecastGuard", f"at least the lookback ({format_duration(lookback)})",
                format_duration(retention))
        if batch < 1:
            raise InvalidParameterError.for_parameter("batch", "ForecastGuard", "an int of at least 1", batch)
        self.cadence, self.lookback, self.retention = cadence, lookback, retention
        self.grace, self.max_gap, self.batch = grace, max_gap, batch
        self.match = max(MATCH, cadence / 2)

    def __repr__(self) -> str:
        return (f"ForecastGuard(cadence={format_duration(self.cadence)}, lookback={format_duration(self.lookback)}, "
                f"retention={format_duration(self.retention)})")

    @staticmethod
    def key(defer: Defer) -> str:
        """The kind of search a ``defer`` block makes (its evidence is shared by every policy of that kind)."""
        return search_key(defer.weights, defer.duration, defer.earliest, defer.deadline - defer.earliest)

    def update(self, session: Session, at: datetime, defers: Iterable[Defer], forecast: Forecast, *,
               model_ids: Iterable[int], cache: dict[Any, Steps | None] | None = None) -> dict[str, Evidence]:
        """Score the searches due by ``at``, make this period's, and return the evidence by kind (see the module).

        Parameters
        ----------
        session : Session
            The planning pass's session (the rows are flushed, not committed).
        at : datetime
            The tick's logical time.
        defers : iterable of Defer
            The ``defer`` blocks of the policies in force; those with ``guard: none`` are left out.
        forecast : callable
            The planner's forecast (:data:`~mape.plan.scheduling.deferral.Forecast`).
        model_ids : iterable of int
            The fleet's models, whose ``carbon.intensity`` observations are the carbon actuals.
        cache : dict, optional
            The forecasts already fetched in this pass.
        """
        at = ensure_utc(at)
        kinds = {self.key(defer): defer for defer in defers if defer.guard != "none"}
        if not kinds:
            return {}
        self._score(session, at, forecast, list(model_ids), cache)
        self._record(session, at, kinds, forecast, cache)
        rows = forecasts.scored_shadows(session, sorted(kinds), since=at - self.lookback, until=at)
        return {key: Evidence.from_rows(rows.get(key, []), match=self.match) for key in kinds}

    def _record(self, session: Session, at: datetime, kinds: dict[str, Defer], forecast: Forecast,
                cache: dict[Any, Steps | None] | None) -> None:
        last = forecasts.last_shadow_times(session, sorted(kinds))
        added = 0
        for key, defer in kinds.items():
            previous = last.get(key)
            if previous is not None and self._period(previous) >= self._period(at):
                continue
            shadow = shadow_search(key=key, issued_at=at, earliest=at + defer.earliest,
                                   latest_start=at + defer.deadline, duration=defer.duration, weights=defer.weights,
                                   forecast=forecast, cache=cache)
            if shadow is not None:
                added += forecasts.add_shadow(session, shadow_row(shadow))
        if added:
            removed = forecasts.prune_shadows(session, at - self.retention)
            logger.debug("Recorded %d shadow searches at %s; removed %d older than %s", added, at.isoformat(),
                         removed, format_duration(self.retention))

    def _period(self, moment: datetime) -> int:
        return int(ensure_utc(moment).timestamp() // self.cadence.total_seconds())

    def _score(self, session: Session, at: datetime, forecast: Forecast, model_ids: list[int],
               cache: dict[Any, Steps | None] | None) -> None:
        due = forecasts.due_shadows(session, at, limit=self.batch)
        gaining = [shadow for shadow in due if shadow.predicted_gain > 0]
        observed: dict[str, list[tuple[datetime, float]]] = {}
        for series, metric in ACTUAL_METRICS.items():
            needing = [s for s in gaining if series in (s.predicted.get("scale") or {})]
            if needing:
                observed[series] = forecasts.observed_series(
                    session, metric, model_ids, min(ensure_utc(s.earliest) for s in needing) - self.max_gap,
                    max(ensure_utc(s.due_at) for s in needing))

        def actual(series: str, start: datetime, end: datetime) -> float | None:
            if series in observed:
                return observed_mean(observed[series], start, end, max_gap=self.max_gap)
            steps = forecast_steps(forecast, series, start, end, cache)
            return steps.mean(start, end) if steps is not None and steps.covers(start, end) else None

        for shadow in due:
            earliest, chosen = ensure_utc(shadow.earliest), ensure_utc(shadow.chosen_start)
            scale = {name: float(value) for name, value in (shadow.predicted.get("scale") or {}).items()}
            gain, means = realised_gain(predicted_gain=shadow.predicted_gain, earliest=earliest, chosen_start=chosen,
                                        duration=timedelta(seconds=shadow.duration_s), scale=scale, actual=actual)
            if gain is not None:
                forecasts.score_shadow(shadow, at, realised_gain=gain, actual=means)
            elif at - ensure_utc(shadow.due_at) >= self.grace:
                note = (f"no actual {' and '.join(sorted(scale))} covered the windows from {earliest.isoformat()} and "
                        f"{chosen.isoformat()} within {format_duration(self.grace)} of their end")
                forecasts.score_shadow(shadow, at, realised_gain=None, actual=means, note=note)
                logger.info("%s cannot be scored: %s", shadow, note)


def shadow_row(shadow: Shadow) -> DeferralShadow:
    """The knowledge-base row of a shadow search (pending)."""
    return DeferralShadow(
        key=shadow.key, issued_at=shadow.issued_at, objective=dict(shadow.weights), earliest=shadow.earliest,
        latest_start=shadow.latest_start, duration_s=shadow.duration.total_seconds(), chosen_start=shadow.chosen_start,
        due_at=shadow.due_at, predicted_gain=shadow.predicted_gain,
        predicted={"run_now": _rounded(shadow.run_now), "chosen": _rounded(shadow.chosen), "scale": shadow.scale})


def _rounded(means: dict[str, float]) -> dict[str, float]:
    return {name: round(value, 6) for name, value in means.items()}
