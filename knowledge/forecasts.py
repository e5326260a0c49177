"""Reads and writes of the shadow searches that guard live deferral (table ``deferral_shadow``), and their actuals.

What it holds: the planner records, once an hour for every kind of search its
policies use, the search a deferred action would get
(:class:`knowledge.tables.DeferralShadow`); once both windows have passed it
scores the row on the actual series, read here too (:func:`observed_series`:
the ``carbon.intensity`` observations the Monitor stores every tick). The
scored rows of the look-back are the evidence of the forecaster's recent error
(:func:`scored_shadows`). Rows older than the retention are removed
(:func:`prune_shadows`).

Who calls it: :class:`mape.plan.forecast_guard.ForecastGuard` (the planner),
and tests.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import delete, func
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from knowledge.tables import DeferralShadow, Observation, ShadowStatus
from mape._util.timeutil import ensure_utc

__all__ = ["add_shadow", "due_shadows", "last_shadow_times", "observed_series", "prune_shadows", "score_shadow",
           "scored_shadows"]


def add_shadow(session: Session, shadow: DeferralShadow) -> bool:
    """Store a shadow search unless one of its key was already issued at the same time; whether it was added."""
    try:
        with session.begin_nested():
            session.add(shadow)
            session.flush()
    except IntegrityError:
        return False  # another controller, or a repeated tick, made this search already
    return True


def last_shadow_times(session: Session, keys: Sequence[str]) -> dict[str, datetime]:
    """By key, the issue time of the newest shadow search (keys without one are left out)."""
    if not keys:
        return {}
    rows = session.exec(select(DeferralShadow.key, func.max(DeferralShadow.issued_at))
                        .where(col(DeferralShadow.key).in_(list(keys))).group_by(DeferralShadow.key))
    return {key: ensure_utc(_as_datetime(issued)) for key, issued in rows if issued is not None}


def due_shadows(session: Session, at: datetime, *, limit: int = 100) -> list[DeferralShadow]:
    """Pending shadow searches whose windows had both passed by ``at``, oldest due first, at most ``limit``."""
    query = (select(DeferralShadow)
             .where(DeferralShadow.status == ShadowStatus.pending.value, DeferralShadow.due_at <= at)
             .order_by(col(DeferralShadow.due_at), col(DeferralShadow.id)).limit(limit))
    return list(session.exec(query))


def score_shadow(shadow: DeferralShadow, at: datetime, *, realised_gain: float | None,
                 actual: dict[str, Any] | None = None, note: str = "") -> None:
    """Record a shadow's realised gain (``None``: it cannot be scored, saying why in ``note``) at ``at``."""
    shadow.realised_gain = realised_gain
    shadow.actual = dict(actual or {})
    shadow.status = (ShadowStatus.scored if realised_gain is not None else ShadowStatus.unscorable).value
    shadow.note = note[:300]
    shadow.scored_at = at


def scored_shadows(session: Session, keys: Sequence[str], *, since: datetime,
                   until: datetime) -> dict[str, list[tuple[datetime, float, float]]]:
    """By key, the scored shadows issued in ``[since, until]`` and due by ``until``, oldest first.

    Each is ``(earliest, predicted gain, realised gain)``.
    """
    if not keys:
        return {}
    query = (select(DeferralShadow.key, DeferralShadow.earliest, DeferralShadow.predicted_gain,
                    DeferralShadow.realised_gain)
             .where(col(DeferralShadow.key).in_(list(keys)), DeferralShadow.status == ShadowStatus.scored.value,
                    DeferralShadow.issued_at >= since, DeferralShadow.issued_at <= until,
                    DeferralShadow.due_at <= until)
             .order_by(col(DeferralShadow.key), col(DeferralShadow.issued_at)))
    found: dict[str, list[tuple[datetime, float, float]]] = {}
    for key, earliest, predicted, realised in session.exec(query):
        if realised is None or not (math.isfinite(predicted) and math.isfinite(realised)):
            continue
        found.setdefault(key, []).append((ensure_utc(_as_datetime(earliest)), float(predicted), float(realised)))
    return found


def prune_shadows(session: Session, before: datetime) -> int:
    """Remove the shadow searches issued before ``before``; how many."""
    result = session.connection().execute(delete(DeferralShadow).where(col(DeferralShadow.issued_at) < before))
    return int(result.rowcount or 0)


def observed_series(session: Session, metric: str, model_ids: Iterable[int], start: datetime,
                    end: datetime) -> list[tuple[datetime, float]]:
    """A fleet-wide metric's values in ``[start, end]``, one per time (the models' mean), finite ones only.

    For metrics every model records alike each tick, such as
    ``carbon.intensity`` (the grid is the fleet's): ``model_ids`` keeps the
    read on the observation index.
    """
    ids = sorted(set(model_ids))
    if not ids:
        return []
    query = (select(Observation.time, func.avg(Observation.value))
             .where(col(Observation.model_id).in_(ids), Observation.metric == metric,
                    Observation.time >= start, Observation.time <= end, col(Observation.value).is_not(None))
             .group_by(Observation.time).order_by(Observation.time))
    return [(ensure_utc(_as_datetime(time)), float(value)) for time, value in session.exec(query)
            if value is not None and math.isfinite(float(value))]


def _as_datetime(value: Any) -> datetime:
    """A datetime as the driver gave it: aggregates over a column may come back as text on SQLite."""
    return value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
