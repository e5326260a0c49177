"""The carbon and resource ledger: energy and emissions of actions, deferral windows, grid intensity and GPU load.

Who calls it: the dashboard's Carbon page (:mod:`dashboard.carbon`), and
tests. Every read is bounded and aggregated in SQL, on SQLite and PostgreSQL
alike: sums per action kind (``GROUP BY``), time series downsampled into
buckets (:func:`bucket_seconds`, at most ``points`` per series), lists with a
``LIMIT``; observations are read through the ``(model_id, metric, time)``
index, one range per model.

Where the numbers come from: the executor records an action run's metered
``energy_kwh`` and realised ``emissions_kg`` (energy times the intensity
observed) on the run, and for a run whose decision was scheduled on a
forecast, ``result.emissions`` beside them: the energy times the forecast
intensity of starting at once (``run_now_forecast_kg``) and of the chosen
window (``chosen_forecast_kg``). The decision keeps the run-now start
(``evidence.schedule.earliest``), the chosen start (``not_before``) and the
job's duration. The Monitor stores ``carbon.intensity`` (labels ``{}``) and
``gpu.device.<field>`` (labels ``{"device": ...}``) observations every tick.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

from sqlalchemy import Float, String, and_, case, cast, func, literal_column
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.functions import FunctionElement
from sqlmodel import Session, col, select

from knowledge.tables import ActionRun, Decision, DeferralShadow, ManagedModel, Observation, Tick
from mape._util.timeutil import ensure_utc, parse_duration
from mape.errors import InvalidParameterError

__all__ = ["ActionEmissions", "DeferralWindow", "DevicePoint", "DeviceSummary", "EmissionBucket", "GPUUsage",
           "SeriesPoint", "ShadowScore", "bucket_seconds", "deferral_windows", "emissions_by_action",
           "emissions_over_time", "gpu_usage", "intensity_series", "latest_activity", "shadow_scores", "total"]

#: The per-device GPU fields the page draws (``gpu.device.<field>``).
GPU_FIELDS = ("utilization", "memory_used_fraction")


# --------------------------------------------------------------------------- time buckets in SQL


class _TimeBucket(FunctionElement[float]):
    """``floor(epoch seconds of a time column / width)``: the bucket a time falls in, in either dialect."""

    type = Float()
    inherit_cache = True
    name = "time_bucket"


@compiles(_TimeBucket)
def _bucket_default(element: _TimeBucket, compiler: SQLCompiler, **kw: Any) -> str:  # PostgreSQL
    column, width = list(element.clauses)
    return f"FLOOR(EXTRACT(EPOCH FROM {compiler.process(column, **kw)}) / {compiler.process(width, **kw)})"


@compiles(_TimeBucket, "sqlite")
def _bucket_sqlite(element: _TimeBucket, compiler: SQLCompiler, **kw: Any) -> str:  # times are stored as text
    column, width = list(element.clauses)
    # julianday, not strftime('%s'): measured 0.4 s against 0.8 s for 69,000 rows; rounded to the second
    seconds = f"CAST(ROUND((julianday({compiler.process(column, **kw)}) - 2440587.5) * 86400) AS INTEGER)"
    return f"({seconds} / {compiler.process(width, **kw)})"


def _bucket(column: Any, width: int) -> _TimeBucket:
    # the width is rendered inline, not bound: PostgreSQL matches a GROUP BY expression to the select's by its text
    return _TimeBucket(column, literal_column(str(int(width))))


def _bucket_start(bucket: Any, width: int) -> datetime:
    return datetime.fromtimestamp(int(float(bucket)) * width, tz=timezone.utc)


def bucket_seconds(since: datetime, until: datetime, points: int, *, owner: str = "bucket_seconds") -> int:
    """The width of the buckets that cut ``[since, until]`` into at most ``points``: whole minutes, at least one.

    >>> t = datetime(2026, 1, 5, tzinfo=timezone.utc)
    >>> bucket_seconds(t, t + timedelta(days=1), 500), bucket_seconds(t, t + timedelta(days=30), 500)
    (180, 5220)
    >>> bucket_seconds(t, t, 500)
    Traceback (most recent call last):
    ...
    mape.errors.InvalidParameterError: The 'until' parameter of bucket_seconds must be a time after since \
(2026-01-05T00:00:00+00:00). Got '2026-01-05T00:00:00+00:00' instead.
    """
    _check_range(since, until, owner)
    if isinstance(points, bool) or not isinstance(points, int) or points < 1:
        raise InvalidParameterError.for_parameter("points", owner, "a positive int", points)
    return max(60, math.ceil((until - since).total_seconds() / points / 60) * 60)


def _check_range(since: datetime, until: datetime, owner: str) -> None:
    if until <= since:
        raise InvalidParameterError.for_parameter("until", owner, f"a time after since ({since.isoformat()})",
                                                  until.isoformat())


def _check_limit(limit: int, owner: str) -> None:
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise InvalidParameterError.for_parameter("limit", owner, "a positive int", limit)


def _model_ids(session: Session) -> list[int]:
    """Every model's id: observation reads name them to stay on the (model_id, metric, time) index."""
    return [i for i in session.exec(select(ManagedModel.id)) if i is not None]


def _utc(value: Any) -> datetime:
    """A datetime as the driver gave it (aggregates may come back as text on SQLite), aware UTC."""
    return ensure_utc(value if isinstance(value, datetime) else datetime.fromisoformat(str(value)))


def latest_activity(session: Session) -> datetime | None:
    """The newest tick, finished action run or ``carbon.intensity`` observation: where the page's time range ends.

    The page's ranges end here rather than at the wall clock, so a knowledge
    base replayed in logical time (the demo) or one whose controller stopped
    shows its last days, not an empty present.
    """
    found = [session.exec(select(func.max(Tick.at))).one(), session.exec(select(func.max(ActionRun.finished_at))).one()]
    ids = _model_ids(session)
    if ids:
        found.append(session.exec(select(func.max(Observation.time)).where(
            col(Observation.model_id).in_(ids), Observation.metric == "carbon.intensity")).one())
    times = [_utc(t) for t in found if t is not None]
    return max(times) if times else None


# --------------------------------------------------------------------------- energy and emissions of actions


@dataclass(frozen=True)
class ActionEmissions:
    """The energy and emissions of the action runs of one kind that finished in a time range.

    Attributes
    ----------
    action : str
        The action type (``"all"`` for :func:`total`).
    runs : int
        Runs finished in the range.
    metered : int
        Those with energy measured.
    energy_kwh, emissions_kg : float
        Sums of the measured energy and of the realised emissions.
    compared : int
        Runs with both a run-now forecast and realised emissions: the only ones a saving is computed on.
    run_now_kg, chosen_kg, realised_kg : float
        Over the compared runs: the emissions forecast for starting at once, forecast for the chosen window
        (where recorded), and realised.
    """

    action: str
    runs: int
    metered: int
    energy_kwh: float
    emissions_kg: float
    compared: int
    run_now_kg: float
    chosen_kg: float
    realised_kg: float

    @property
    def saved_kg(self) -> float:
        """Run-now forecast less realised emissions, over the compared runs (negative: deferral cost carbon)."""
        return self.run_now_kg - self.realised_kg

    @property
    def saved_fraction(self) -> float | None:
        """:attr:`saved_kg` as a share of the run-now forecast; ``None`` without one."""
        return self.saved_kg / self.run_now_kg if self.run_now_kg > 0 else None


def _emission_columns() -> tuple[Any, Any, Any]:
    """The run-now forecast, chosen forecast and realised kg of ``result.emissions`` (JSON, either dialect)."""
    emissions = ActionRun.result  # type: ignore[index]
    return (emissions[("emissions", "run_now_forecast_kg")].as_float(),  # type: ignore[index]
            emissions[("emissions", "chosen_forecast_kg")].as_float(),  # type: ignore[index]
            col(ActionRun.emissions_kg))


def emissions_by_action(session: Session, since: datetime, until: datetime) -> list[ActionEmissions]:
    """Per action kind, the runs that finished in ``[since, until)`` and their energy and emissions (one query).

    A saving is counted only on runs that have both a run-now forecast and
    realised emissions (``compared``); the other runs' emissions are in the
    totals, not in the saving.
    """
    _check_range(since, until, "emissions_by_action")
    run_now, chosen, realised = _emission_columns()
    both = and_(run_now.is_not(None), realised.is_not(None))
    query = (select(ActionRun.action, func.count(), func.count(col(ActionRun.energy_kwh)),
                    func.coalesce(func.sum(ActionRun.energy_kwh), 0.0), func.coalesce(func.sum(realised), 0.0),
                    func.coalesce(func.sum(case((both, 1), else_=0)), 0),
                    func.coalesce(func.sum(case((both, run_now))), 0.0),
                    func.coalesce(func.sum(case((both, chosen))), 0.0),
                    func.coalesce(func.sum(case((both, realised))), 0.0))
             .where(col(ActionRun.finished_at) >= since, col(ActionRun.finished_at) < until)
             .group_by(ActionRun.action).order_by(ActionRun.action))
    return [ActionEmissions(action=action, runs=int(runs), metered=int(metered), energy_kwh=float(kwh),
                            emissions_kg=float(kg), compared=int(compared), run_now_kg=float(now),
                            chosen_kg=float(chose), realised_kg=float(real))
            for action, runs, metered, kwh, kg, compared, now, chose, real in session.exec(query)]


def total(rows: Sequence[ActionEmissions]) -> ActionEmissions:
    """The sum of per-kind rows, as one row named ``all``."""
    return ActionEmissions(action="all", runs=sum(r.runs for r in rows), metered=sum(r.metered for r in rows),
                           energy_kwh=sum(r.energy_kwh for r in rows), emissions_kg=sum(r.emissions_kg for r in rows),
                           compared=sum(r.compared for r in rows), run_now_kg=sum(r.run_now_kg for r in rows),
                           chosen_kg=sum(r.chosen_kg for r in rows), realised_kg=sum(r.realised_kg for r in rows))


@dataclass(frozen=True)
class EmissionBucket:
    """The runs of one action kind that finished in one time bucket: how many, their energy and emissions."""

    start: datetime
    action: str
    runs: int
    energy_kwh: float
    emissions_kg: float


def emissions_over_time(session: Session, since: datetime, until: datetime, *,
                        points: int = 60) -> list[EmissionBucket]:
    """The runs finished in ``[since, until)`` summed per time bucket and action kind (at most ``points`` buckets)."""
    width = bucket_seconds(since, until, points, owner="emissions_over_time")
    bucket = _bucket(ActionRun.finished_at, width).label("bucket")
    query = (select(bucket, ActionRun.action, func.count(), func.coalesce(func.sum(ActionRun.energy_kwh), 0.0),
                    func.coalesce(func.sum(ActionRun.emissions_kg), 0.0))
             .where(col(ActionRun.finished_at) >= since, col(ActionRun.finished_at) < until,
                    col(ActionRun.energy_kwh).is_not(None))
             .group_by(literal_column("bucket"), ActionRun.action).order_by(literal_column("bucket"), ActionRun.action))
    return [EmissionBucket(_bucket_start(b, width), action, int(runs), float(kwh), float(kg))
            for b, action, runs, kwh, kg in session.exec(query)]


# --------------------------------------------------------------------------- deferral windows


@dataclass(frozen=True)
class DeferralWindow:
    """A decision deferred on a forecast: when it would have started at once, and the window chosen instead.

    ``started_at`` is when its run really started (``None``: not yet, or never).
    """

    decision_id: int
    model_id: int
    action: str
    run_now_start: datetime
    chosen_start: datetime
    chosen_end: datetime
    started_at: datetime | None
    state: str | None


def deferral_windows(session: Session, since: datetime, until: datetime, *,
                     limit: int = 200) -> list[DeferralWindow]:
    """The deferred decisions whose chosen start falls in ``[since, until)``, newest first, at most ``limit``.

    Deferred: its policy's ``defer`` was searched on a forecast
    (``evidence.schedule.earliest`` recorded) and the start chosen is later
    than the earliest. The window's length is the job's ``duration`` as the
    policy declared it (1 h when the record lacks it).
    """
    _check_range(since, until, "deferral_windows")
    _check_limit(limit, "deferral_windows")
    schedule = Decision.evidence  # type: ignore[index]
    earliest = schedule[("schedule", "earliest")].as_string()  # type: ignore[index]
    start = schedule[("schedule", "start")].as_string()  # type: ignore[index]
    duration = schedule[("schedule", "duration")].as_string()  # type: ignore[index]
    query = (select(Decision.id, Decision.model_id, Decision.action, earliest, Decision.not_before, duration,
                    ActionRun.started_at, ActionRun.state)
             .outerjoin(ActionRun, col(ActionRun.decision_id) == col(Decision.id))
             .where(col(Decision.not_before) >= since, col(Decision.not_before) < until,
                    earliest.is_not(None), start != earliest)  # isoformat() of aware UTC times: equal iff the same
             .order_by(col(Decision.not_before).desc(), col(Decision.id).desc()).limit(limit))
    found = []
    for decision_id, model_id, action, run_now, chosen, length, started, state in session.exec(query):
        run_now_start, chosen_start = _utc(run_now), _utc(chosen)
        if chosen_start <= run_now_start:
            continue  # moved back to its earliest time since: not deferred
        try:
            span = parse_duration(length) if length else timedelta(hours=1)
        except ValueError:
            span = timedelta(hours=1)
        found.append(DeferralWindow(decision_id, model_id, action, run_now_start, chosen_start, chosen_start + span,
                                    _utc(started) if started is not None else None, state))
    return found


# --------------------------------------------------------------------------- observed series


@dataclass(frozen=True)
class SeriesPoint:
    """One bucket of a downsampled series: its start, the mean, lowest and highest value, and how many values."""

    time: datetime
    mean: float
    low: float
    high: float
    samples: int


def intensity_series(session: Session, since: datetime, until: datetime, *, points: int = 500) -> list[SeriesPoint]:
    """The grid's ``carbon.intensity`` in ``[since, until)``, in at most ``points`` buckets.

    The grid is the fleet's: every model records the same reading each tick
    (one provider, read once a tick), so one model's series is read, the one
    whose observations span the most of the range; averaging every model's
    would read ten times the rows for ten models and draw the same line.
    """
    width = bucket_seconds(since, until, points, owner="intensity_series")
    model_id = _grid_model(session, since, until)
    if model_id is None:
        return []
    bucket = _bucket(Observation.time, width).label("bucket")
    query = (select(bucket, func.avg(Observation.value), func.min(Observation.value), func.max(Observation.value),
                    func.count(col(Observation.value)))
             .where(Observation.model_id == model_id, Observation.metric == "carbon.intensity",
                    Observation.time >= since, Observation.time < until, col(Observation.value).is_not(None))
             .group_by(literal_column("bucket")).order_by(literal_column("bucket")))
    return [SeriesPoint(_bucket_start(b, width), float(mean), float(low), float(high), int(n))
            for b, mean, low, high, n in session.exec(query) if mean is not None]


def _grid_model(session: Session, since: datetime, until: datetime) -> int | None:
    """The model whose ``carbon.intensity`` observations span the most of the range (two index seeks a model)."""
    best: tuple[timedelta, int] | None = None
    for model_id in _model_ids(session):
        where = (Observation.model_id == model_id, Observation.metric == "carbon.intensity",
                 Observation.time >= since, Observation.time < until)
        # one aggregate a query: SQLite answers a lone min() or max() with one index seek, both together by a scan
        first = session.exec(select(func.min(Observation.time)).where(*where)).one()
        last = session.exec(select(func.max(Observation.time)).where(*where)).one()
        if first is not None and (best is None or _utc(last) - _utc(first) > best[0]):
            best = (_utc(last) - _utc(first), model_id)
    return best[1] if best is not None else None


@dataclass(frozen=True)
class DevicePoint:
    """One bucket of one GPU field of one device: the mean and the highest value, and how many readings."""

    device: str
    field: str
    time: datetime
    mean: float
    high: float
    readings: int


@dataclass(frozen=True)
class DeviceSummary:
    """One GPU over a time range: readings, mean and peak utilization (``None``: never known, e.g. MIG), memory."""

    device: str
    readings: int
    mean_utilization: float | None
    peak_utilization: float | None
    peak_memory_fraction: float | None
    last_seen: datetime


@dataclass(frozen=True)
class GPUUsage:
    """The GPUs seen in a time range, by name, and their downsampled utilization and memory series."""

    devices: list[DeviceSummary]
    series: list[DevicePoint]


def gpu_usage(session: Session, since: datetime, until: datetime, *, points: int = 300,
              max_devices: int = 64) -> GPUUsage:
    """Per device, the ``gpu.device.utilization`` and ``memory_used_fraction`` observations in ``[since, until)``.

    One query, grouped by the observations' labels as text (a label's
    ``device`` extracted per row doubled the cost on SQLite), field and
    bucket (at most ``points`` per series); the devices' summaries are
    combined from the buckets' means, peaks and counts, so they are exact.
    At most ``max_devices`` devices (the first by labels) are read.
    """
    width = bucket_seconds(since, until, points, owner="gpu_usage")
    _check_limit(max_devices, "gpu_usage")
    ids = _model_ids(session)
    if not ids:
        return GPUUsage([], [])
    # PostgreSQL: json has no equality, its text has; and an alias other than "labels" (a column wins in GROUP BY)
    labels = cast(Observation.labels, String).label("label_text")
    bucket = _bucket(Observation.time, width).label("bucket")
    query = (select(labels, Observation.metric, bucket, func.avg(Observation.value), func.max(Observation.value),
                    func.count(col(Observation.value)), func.max(Observation.time))
             .where(col(Observation.model_id).in_(ids),
                    col(Observation.metric).in_([f"gpu.device.{f}" for f in GPU_FIELDS]),
                    Observation.time >= since, Observation.time < until, col(Observation.value).is_not(None))
             .group_by(literal_column("label_text"), Observation.metric, literal_column("bucket"))
             .order_by(literal_column("label_text"), Observation.metric, literal_column("bucket"))
             .limit(points * len(GPU_FIELDS) * max_devices))
    merged: dict[tuple[str, str, int], list[Any]] = {}  # (device, field, bucket) -> [sum, peak, readings, last]
    for text, metric, b, mean, high, n, last in session.exec(query):
        device = _device(text)
        if device is None or mean is None:
            continue
        key = (device, metric.removeprefix("gpu.device."), int(float(b)))
        found = merged.setdefault(key, [0.0, float(high), 0, _utc(last)])
        found[0] += float(mean) * int(n)
        found[1], found[2], found[3] = max(found[1], float(high)), found[2] + int(n), max(found[3], _utc(last))
    series = [DevicePoint(device, field, datetime.fromtimestamp(b * width, tz=timezone.utc), total / n, high, n)
              for (device, field, b), (total, high, n, _) in sorted(merged.items())]
    return GPUUsage(_summaries(merged), series)


def _device(labels: Any) -> str | None:
    """The ``device`` label of an observation's labels as stored (JSON text), if it has one."""
    try:
        found = json.loads(labels) if isinstance(labels, str) else labels
    except ValueError:
        return None
    device = found.get("device") if isinstance(found, dict) else None
    return str(device) if device is not None else None


def _summaries(merged: dict[tuple[str, str, int], list[Any]]) -> list[DeviceSummary]:
    devices: dict[str, dict[str, Any]] = {}
    for (device, field, _), (total, high, n, last) in merged.items():
        entry = devices.setdefault(device, {"readings": 0, "last": last})
        entry["readings"] += n
        entry["last"] = max(entry["last"], last)
        mine = entry.setdefault(field, [0.0, high, 0])
        mine[0], mine[1], mine[2] = mine[0] + total, max(mine[1], high), mine[2] + n
    summaries = []
    for device, entry in sorted(devices.items()):
        use, memory = entry.get("utilization"), entry.get("memory_used_fraction")
        summaries.append(DeviceSummary(device, entry["readings"], use[0] / use[2] if use else None,
                                       use[1] if use else None, memory[1] if memory else None, entry["last"]))
    return summaries


# --------------------------------------------------------------------------- forecast against actual


@dataclass(frozen=True)
class ShadowScore:
    """A scored shadow search: what the forecast promised to save by deferring, and what the actual series gave."""

    issued_at: datetime
    key: str
    predicted_gain: float
    realised_gain: float


def shadow_scores(session: Session, since: datetime, until: datetime, *,
                  limit: int = 500) -> tuple[dict[str, int], list[ShadowScore]]:
    """Shadow searches issued in ``[since, until)``: how many per status, and the newest ``limit`` scored ones."""
    _check_range(since, until, "shadow_scores")
    _check_limit(limit, "shadow_scores")
    in_range = (DeferralShadow.issued_at >= since, DeferralShadow.issued_at < until)
    counts = {status: int(n) for status, n in session.exec(
        select(DeferralShadow.status, func.count()).where(*in_range).group_by(DeferralShadow.status))}
    rows = session.exec(select(DeferralShadow.issued_at, DeferralShadow.key, DeferralShadow.predicted_gain,
                               DeferralShadow.realised_gain)
                        .where(*in_range, DeferralShadow.status == "scored",
                               col(DeferralShadow.realised_gain).is_not(None))
                        .order_by(col(DeferralShadow.issued_at).desc()).limit(limit))
    scores = [ShadowScore(_utc(at), key, float(p), float(r)) for at, key, p, r in rows
              if math.isfinite(float(p)) and math.isfinite(float(r))]
    return counts, scores
