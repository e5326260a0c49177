"""One model's history for the dashboard's Model page: downsampled metric series, decisions, action runs, versions.

Who calls it: :mod:`dashboard.model` (the Carbon page may reuse
:func:`downsampled`). Every read is bounded, aggregates in SQL and serves a
chart of a few hundred points, whatever the number of observations:

- :func:`downsampled` cuts ``[since, until]`` into at most ``max_points``
  buckets of whole seconds and returns one row per metric, label value and
  bucket (mean, min, max, count), grouped in SQL on an integer bucket number
  (SQLite: ``strftime('%s', time)``, integer division; PostgreSQL:
  ``floor(extract(epoch ...))``); the rows are read through the
  (model_id, metric, time) index of ``observation``;
- :func:`top_labels` picks the few label values (features) with the largest
  value in the range, so a model with 200 features draws 5 lines, not 200;
- :func:`observed_span` finds the first and last observation of some metrics
  with one index seek each (the "all" range, and "nothing observed" messages);
- :func:`decision_marks`, :func:`run_marks` and :func:`version_history` read
  at most ``limit`` rows, newest first, joined in one query each.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

from sqlalchemy import BigInteger, Float, Integer, cast, func, literal
from sqlalchemy.orm import aliased
from sqlalchemy.sql.elements import ColumnElement
from sqlmodel import Session, col, select

from knowledge.tables import ActionRun, Decision, ModelVersion, Observation
from mape._util.timeutil import ensure_utc
from mape.errors import InvalidParameterError

__all__ = ["DecisionMark", "RunMark", "SeriesPoint", "VersionEntry", "bucket_seconds", "decision_marks",
           "downsampled", "observed_span", "run_marks", "top_labels", "version_history"]

#: Points per series the dashboard draws by default: enough for a chart's width, few enough to render quickly.
MAX_POINTS = 500
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


@dataclass(frozen=True)
class SeriesPoint:
    """One bucket of one series: ``metric`` and its label values ``key`` (empty for summary metrics)."""

    metric: str
    key: tuple[str, ...]
    time: datetime
    mean: float
    low: float
    high: float
    count: int


@dataclass(frozen=True)
class DecisionMark:
    """A decision on the time axis, with what became of it (its action run, if one was started)."""

    id: int
    time: datetime
    policy: str
    action: str
    status: str
    reason: str
    evidence: dict[str, Any]
    run_id: int | None
    run_state: str | None
    verdict: str | None


@dataclass(frozen=True)
class RunMark:
    """An action run on the time axis: when it started (or was created) and finished, and its outcome."""

    id: int
    decision_id: int
    policy: str
    action: str
    state: str
    verdict: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    message: str


@dataclass(frozen=True)
class VersionEntry:
    """A model version with its lineage: the version it was trained beside, and the run and policy that made it."""

    id: int
    version: int
    stage: str
    created_at: datetime
    promoted_at: datetime | None
    retired_at: datetime | None
    metrics: dict[str, Any]
    evaluation: dict[str, Any]
    parent_version: int | None
    action_run_id: int | None
    decision_id: int | None
    policy: str | None


def _check_range(owner: str, since: datetime, until: datetime) -> None:
    if since.tzinfo is None:
        raise InvalidParameterError.for_parameter("since", owner, "a timezone-aware datetime", since)
    if until.tzinfo is None:
        raise InvalidParameterError.for_parameter("until", owner, "a timezone-aware datetime", until)
    if not since < until:
        raise InvalidParameterError.for_parameter("until", owner, f"after since ({since.isoformat()})",
                                                  until.isoformat())


def _check_positive(owner: str, name: str, value: int, least: int = 1) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < least:
        raise InvalidParameterError.for_parameter(name, owner, f"an int of at least {least}", value)


def bucket_seconds(since: datetime, until: datetime, max_points: int = MAX_POINTS) -> int:
    """The width of a bucket, in whole seconds, that cuts ``[since, until]`` into at most ``max_points`` buckets.

    >>> start = datetime(2026, 1, 5, tzinfo=timezone.utc)
    >>> bucket_seconds(start, start + timedelta(days=7))  # a week in 500 buckets of about 20 minutes
    1210
    >>> bucket_seconds(start, start + timedelta(seconds=10))
    1
    """
    _check_range("bucket_seconds", since, until)
    _check_positive("bucket_seconds", "max_points", max_points)
    span = int((until - since).total_seconds())
    return span // max_points + 1  # the last second of the range falls in bucket span // width < max_points


def _epoch_seconds(value: datetime) -> int:
    return int((ensure_utc(value) - _EPOCH) // timedelta(seconds=1))


def _bucket(session: Session, start: int, width: int) -> ColumnElement[int]:
    """The bucket number of an observation's time: ``floor((epoch seconds - start) / width)``, in the database."""
    if session.get_bind().dialect.name == "sqlite":
        # stored as 'YYYY-MM-DD HH:MM:SS.ffffff' (UTC); integer division of non-negative integers is floor
        seconds = cast(func.strftime("%s", Observation.time), Integer)
        return (seconds - literal(start)) // literal(width)
    seconds = func.extract("epoch", Observation.time)
    return cast(func.floor((seconds - literal(start)) / literal(width)), BigInteger)


def downsampled(
    session: Session, model_id: int, metrics: Sequence[str], *, since: datetime, until: datetime,
    max_points: int = MAX_POINTS, by: Sequence[str] = (), only: tuple[str, Sequence[str]] | None = None,
) -> list[SeriesPoint]:
    """The observations of ``metrics`` in ``[since, until]``, at most ``max_points`` buckets per series.

    Parameters
    ----------
    session : Session
        Read only.
    model_id : int
        The model.
    metrics : sequence of str
        Observation metric names, e.g. ``["drift.share_drifted"]``.
    since, until : datetime
        The range (timezone-aware; ``since`` is taken to the whole second).
    max_points : int
        Buckets per series at most (:func:`bucket_seconds`).
    by : sequence of str
        Label names that split a metric into series (``["feature"]``,
        ``["attribute", "group"]``); a point's ``key`` holds their values.
    only : (label, values), optional
        Keep the rows whose label ``label`` is one of ``values`` (the top
        features of :func:`top_labels`).

    Returns
    -------
    list of SeriesPoint
        By metric, key and time; observations without a value are left out,
        and a bucket without any has no point (a gap in the line).
    """
    _check_range("downsampled", since, until)
    _check_positive("downsampled", "max_points", max_points)
    if not metrics:
        return []
    start = _epoch_seconds(since)
    width = bucket_seconds(since, until, max_points)
    bucket = _bucket(session, start, width).label("bucket")
    keys = [Observation.labels[name].as_string().label(f"k{i}") for i, name in enumerate(by)]
    where = [Observation.model_id == model_id, col(Observation.metric).in_(list(metrics)),
             Observation.time >= since, Observation.time <= until, col(Observation.value).is_not(None)]
    if only is not None:
        label, values = only
        where.append(Observation.labels[label].as_string().in_(list(values)))
    weight = cast(func.coalesce(Observation.samples, 1), Float)
    query = (
        # a row the retention pass wrote stands for ``samples`` values (knowledge.retention): weighted by them
        select(Observation.metric, *keys, bucket, func.sum(Observation.value * weight) / func.sum(weight),
               func.min(func.coalesce(Observation.value_min, Observation.value)),
               func.max(func.coalesce(Observation.value_max, Observation.value)), func.sum(weight))
        .where(*where)
        .group_by(Observation.metric, *keys, bucket)
        .order_by(Observation.metric, *keys, bucket)
    )
    points = []
    for row in session.connection().execute(query):
        metric, key, number = row[0], tuple(str(k) for k in row[1:1 + len(keys)]), int(row[1 + len(keys)])
        mean, low, high, count = row[2 + len(keys):]
        points.append(SeriesPoint(metric=metric, key=key, time=_EPOCH + timedelta(seconds=start + number * width),
                                  mean=float(mean), low=float(low), high=float(high), count=int(count)))
    return points


def top_labels(session: Session, model_id: int, metric: str, label: str, *, since: datetime, until: datetime,
               n: int = 5) -> list[tuple[str, float]]:
    """The ``n`` values of label ``label`` whose ``metric`` reached the largest value in the range, largest first.

    E.g. the five features with the largest drift effect size in the week:
    ``top_labels(session, m, "drift.feature.effect_size", "feature", ...)``.
    """
    _check_range("top_labels", since, until)
    _check_positive("top_labels", "n", n)
    key = Observation.labels[label].as_string()
    largest = func.max(Observation.value)
    query = (
        select(key, largest)
        .where(Observation.model_id == model_id, Observation.metric == metric, Observation.time >= since,
               Observation.time <= until, col(Observation.value).is_not(None))
        .group_by(key)
        .order_by(largest.desc(), key)
        .limit(n)
    )
    return [(str(name), float(value)) for name, value in session.connection().execute(query) if name is not None]


def observed_span(session: Session, model_id: int, metrics: Sequence[str]) -> tuple[datetime | None, datetime | None]:
    """The first and the last observation time of any of ``metrics`` (``(None, None)``: none observed).

    Two index seeks per metric (min and max of the (model_id, metric, time)
    index), so it costs the same on a year of ticks as on a day.
    """
    first: datetime | None = None
    last: datetime | None = None
    for metric in dict.fromkeys(metrics):
        where = (Observation.model_id == model_id, Observation.metric == metric)
        low = session.exec(select(func.min(Observation.time)).where(*where)).one()
        high = session.exec(select(func.max(Observation.time)).where(*where)).one()
        if low is None or high is None:
            continue
        low, high = ensure_utc(_as_datetime(low)), ensure_utc(_as_datetime(high))
        first = low if first is None or low < first else first
        last = high if last is None or high > last else last
    return first, last


def _as_datetime(value: Any) -> datetime:
    """min()/max() of a datetime column: SQLite hands back the stored text, PostgreSQL a datetime."""
    return value if isinstance(value, datetime) else datetime.fromisoformat(str(value))


def decision_marks(session: Session, model_id: int, *, since: datetime, until: datetime,
                   limit: int = 500) -> list[DecisionMark]:
    """The model's decisions made in ``[since, until]``, newest first, at most ``limit``, with their run's outcome."""
    _check_range("decision_marks", since, until)
    _check_positive("decision_marks", "limit", limit)
    query = (
        select(Decision.id, Decision.created_at, Decision.policy_name, Decision.action, Decision.status,
               Decision.reason, Decision.evidence, ActionRun.id, ActionRun.state, ActionRun.verdict)
        .outerjoin(ActionRun, col(ActionRun.decision_id) == col(Decision.id))
        .where(Decision.model_id == model_id, Decision.created_at >= since, Decision.created_at <= until)
        .order_by(col(Decision.created_at).desc(), col(Decision.id).desc())
        .limit(limit)
    )
    return [DecisionMark(id=row[0], time=ensure_utc(row[1]), policy=row[2], action=row[3], status=row[4],
                         reason=row[5] or "", evidence=dict(row[6] or {}), run_id=row[7], run_state=row[8],
                         verdict=row[9])
            for row in session.exec(query)]


def run_marks(session: Session, model_id: int, *, since: datetime, until: datetime, limit: int = 500) -> list[RunMark]:
    """The model's action runs created in ``[since, until]``, newest first, at most ``limit``, with their policy."""
    _check_range("run_marks", since, until)
    _check_positive("run_marks", "limit", limit)
    query = (
        select(ActionRun, Decision.policy_name)
        .join(Decision, col(Decision.id) == col(ActionRun.decision_id))
        .where(ActionRun.model_id == model_id, ActionRun.created_at >= since, ActionRun.created_at <= until)
        .order_by(col(ActionRun.created_at).desc(), col(ActionRun.id).desc())
        .limit(limit)
    )
    return [RunMark(id=run.id, decision_id=run.decision_id, policy=policy, action=run.action, state=run.state,
                    verdict=run.verdict, created_at=ensure_utc(run.created_at),
                    started_at=ensure_utc(run.started_at) if run.started_at else None,
                    finished_at=ensure_utc(run.finished_at) if run.finished_at else None, message=run.message or "")
            for run, policy in session.exec(query)]


def version_history(session: Session, model_id: int, *, limit: int = 100) -> list[VersionEntry]:
    """The model's newest ``limit`` versions, newest first, with lineage and the gate's numbers (``evaluation``).

    The parent is the production version when the candidate was registered;
    the action run and its decision's policy say what produced it (none: a
    person or the bootstrap registered it).
    """
    _check_positive("version_history", "limit", limit)
    parent = aliased(ModelVersion)
    query = (
        select(ModelVersion, parent.version, ActionRun.id, ActionRun.decision_id, Decision.policy_name)
        .outerjoin(parent, col(parent.id) == col(ModelVersion.parent_version_id))
        .outerjoin(ActionRun, col(ActionRun.id) == col(ModelVersion.created_by_action_run_id))
        .outerjoin(Decision, col(Decision.id) == col(ActionRun.decision_id))
        .where(ModelVersion.model_id == model_id)
        .order_by(col(ModelVersion.version).desc())
        .limit(limit)
    )
    return [VersionEntry(id=v.id, version=v.version, stage=v.stage, created_at=ensure_utc(v.created_at),
                         promoted_at=ensure_utc(v.promoted_at) if v.promoted_at else None,
                         retired_at=ensure_utc(v.retired_at) if v.retired_at else None,
                         metrics=dict(v.metrics or {}), evaluation=dict(v.evaluation or {}),
                         parent_version=parent_version, action_run_id=run_id, decision_id=decision_id,
                         policy=policy)
            for v, parent_version, run_id, decision_id, policy in session.exec(query)]
