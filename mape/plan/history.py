"""The recorded world as it stood at any past tick: what a replay of the planner needs to know.

What it does: the knowledge base keeps the present state of most things
(a symptom's status, a version's stage, the pauses in force), and when each
changed. The classes here turn those rows back into the state *as of* a past
tick, with the semantics of the live reads (:func:`mape.plan.context.build_contexts`,
:func:`mape.plan.ledger.read_ledger`):

- :class:`ObservationSweep`: the newest summary observation of each metric of
  each model, swept forward in time over windows of rows (never the whole
  table at once), exactly as :func:`knowledge.queries.latest_summary_metrics_fleet`
  finds it at each tick;
- :class:`SymptomHistory`: the symptoms open at a tick (``opened_at`` at or
  before it, ``closed_at`` after it);
- :class:`VersionHistory`: each model's versions with their stage and
  ``promoted_at`` as they stood (promotions from the audit trail, so a version
  promoted again by a rollback keeps its earlier time in production);
- :class:`RunHistory`: the action runs in flight while a tick was planned
  (created at an earlier tick, not yet finished);
- :class:`Intervals`: pauses and verification blocks in force at a tick.

What the rows cannot tell is approximated, and said so: an open symptom
counts as seen on every tick up to its last ``last_seen_at``; the labels of a
model are today's.

Who calls it: :mod:`mape.plan.simulate` (``mape policy simulate``).
"""

from __future__ import annotations

import bisect
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

from sqlmodel import Session

from knowledge import queries
from knowledge.tables import ActionRun, ActionState, ModelVersion, Pause, Stage, Symptom, SymptomStatus
from mape._util.timeutil import ensure_utc
from mape.plan.context import METRIC_ROOTS

__all__ = ["Intervals", "ObservationSweep", "RunHistory", "SymptomHistory", "VersionHistory", "is_summary_metric"]

_PREFIXES = tuple(f"{root}." for root in METRIC_ROOTS)
_NEVER = datetime.max.replace(tzinfo=timezone.utc)
_DAWN = datetime.min.replace(tzinfo=timezone.utc)
_TICK = timedelta(microseconds=1)  # the resolution of stored times: "after t" is "at or after t + 1 µs"


def is_summary_metric(name: str) -> bool:
    """Whether the planner's context reads this metric: ``<root>.*`` of a metric root (``drift``, ...), not per feature.

    >>> is_summary_metric("drift.share_drifted"), is_summary_metric("drift.feature.age"), is_summary_metric("x.y")
    (True, False, False)
    """
    return name.startswith(_PREFIXES) and not name.startswith("drift.feature.")


def _root_of(metric: str) -> str:
    return metric.split(".", 1)[0]


class Latest:
    """The newest summary observation of one metric: its time and value (what the context reads)."""

    __slots__ = ("time", "value")

    def __init__(self, time: datetime, value: float | None) -> None:
        self.time = time
        self.value = value

    def __repr__(self) -> str:
        return f"Latest({self.time.isoformat()}, {self.value!r})"


class _Times:
    """Driver values of ``observation.time`` turned into aware datetimes, each distinct text parsed once."""

    def __init__(self) -> None:
        self.parsed: dict[Any, datetime] = {}

    def __call__(self, raw: Any) -> datetime:
        found = self.parsed.get(raw)
        if found is None:
            if isinstance(raw, datetime):
                found = ensure_utc(raw)
            else:  # SQLite keeps "YYYY-MM-DD HH:MM:SS.ffffff", in UTC
                found = ensure_utc(datetime.fromisoformat(str(raw)))
            if len(self.parsed) > 200_000:
                self.parsed.clear()
            self.parsed[raw] = found
        return found


def _empty_labels(raw: Any) -> bool:
    if raw is None or raw == "{}" or raw == {}:
        return True
    if isinstance(raw, str):
        try:
            return not json.loads(raw)
        except ValueError:
            return False
    return not raw


class ObservationSweep:
    """The newest summary observation of every metric of every model, as time moves forward tick by tick.

    Parameters
    ----------
    session : Session
        Open session on the knowledge base (only read).
    model_ids : sequence of int
        The models to follow.
    start : datetime
        The first tick: the state at ``start`` is read with the live query,
        later rows are swept in.
    max_age : timedelta, optional
        The staleness bound: older rows are never needed.

    Notes
    -----
    Rows are read in windows (:meth:`load`) with one indexed query per window,
    and applied per model with :meth:`advance`; per metric, as the live query
    does, the newest time wins, and among rows of that time the last one
    (by id) without labels; when only labelled rows carry the newest time the
    metric is absent.
    """

    def __init__(self, session: Session, model_ids: Sequence[int], start: datetime, *,
                 max_age: timedelta | None) -> None:
        self.session = session
        self.model_ids = list(model_ids)
        self._times = _Times()
        #: By model, by root (``drift``, ``performance``): the newest observation of each metric.
        self.latest: dict[int, dict[str, dict[str, Latest]]] = {m: {root: {} for root in METRIC_ROOTS}
                                                                for m in self.model_ids}
        self._newest: dict[int, dict[str, datetime]] = {m: {} for m in self.model_ids}
        self.metrics = sorted({name for m in self.model_ids for name in queries.metric_names(session, m)
                               if is_summary_metric(name)})
        since = start - max_age if max_age is not None else None
        initial = queries.latest_summary_metrics_fleet(session, self.model_ids, until=start, since=since,
                                                       prefixes=_PREFIXES)
        for model_id, by_metric in initial.items():
            for name, obs in by_metric.items():
                time = ensure_utc(obs.time)
                self.latest[model_id][_root_of(name)][name] = Latest(time, obs.value)
                self._newest[model_id][name] = time
        self._loaded_until = start
        self._rows: dict[int, list[tuple[Latest, str, str, bool]]] = {}
        self._next: dict[int, int] = {}

    def load(self, until: datetime) -> int:
        """Read the rows after the last window up to ``until`` (inclusive); returns how many."""
        if until <= self._loaded_until:
            return 0
        rows = queries.observation_rows(self.session, self.model_ids, self.metrics, after=self._loaded_until,
                                        until=until)
        times, parsed = self._times, self._times.parsed
        by_model: dict[int, list[tuple[Latest, str, str, bool]]] = {}
        last_model, pending = None, None
        roots = {name: _root_of(name) for name in self.metrics}
        for model_id, metric, raw_time, _, value, labels in rows:  # by model, time and id
            if model_id != last_model:
                pending = by_model.setdefault(model_id, [])
                last_model = model_id
            time = parsed.get(raw_time) or times(raw_time)
            pending.append((Latest(time, value), metric, roots[metric],  # type: ignore[union-attr]
                            labels == "{}" or _empty_labels(labels)))
        for model_id, fresh in by_model.items():
            left = self._rows.get(model_id)
            start = self._next.get(model_id, 0)
            if left is not None and start < len(left):
                fresh = left[start:] + fresh
            self._rows[model_id] = fresh
            self._next[model_id] = 0
        self._loaded_until = until
        return len(rows)

    def advance(self, model_id: int, at: datetime) -> bool:
        """Apply the model's rows up to ``at``; whether anything changed."""
        rows = self._rows.get(model_id)
        if not rows:
            return False
        index = self._next[model_id]
        if rows[index][0].time > at:
            return False
        latest, newest = self.latest[model_id], self._newest[model_id]
        count = len(rows)
        while index < count:
            observed, metric, root, empty = rows[index]
            time = observed.time
            if time > at:
                break
            index += 1
            last = newest.get(metric)
            if last is None or time > last:
                newest[metric] = time
                if empty:
                    latest[root][metric] = observed
                else:
                    latest[root].pop(metric, None)
            elif time == last and empty:
                latest[root][metric] = observed
        if index >= count:
            del self._rows[model_id]
            del self._next[model_id]
        else:
            self._next[model_id] = index
        return True


@dataclass
class _SymptomAt:
    """A symptom as the context reads it, with ``last_seen_at`` as of the tick."""

    kind: str
    severity: str
    opened_at: datetime
    last_seen_at: datetime


@dataclass
class _Interval:
    start: datetime
    end: datetime
    item: Any


class SymptomHistory:
    """The symptoms open at each tick: opened at or before it, not closed at or before it.

    ``last_seen_at`` as of a tick is the row's last one, or the tick itself if
    that is later (the row keeps only the last time it was seen). Ticks must be
    asked for in time order, per model: the open set is swept forward.
    """

    def __init__(self, symptoms: Iterable[Symptom]) -> None:
        self._pending: dict[int, list[_Interval]] = {}
        for symptom in symptoms:
            opened = ensure_utc(symptom.opened_at)
            if symptom.closed_at is not None:
                end = ensure_utc(symptom.closed_at)
            elif symptom.status == SymptomStatus.closed.value:
                end = ensure_utc(symptom.last_seen_at)  # closed without a time: as of its last sighting
            else:
                end = _NEVER
            if end > opened:
                self._pending.setdefault(symptom.model_id, []).append(_Interval(opened, end, symptom))
        for intervals in self._pending.values():
            intervals.sort(key=lambda i: i.start, reverse=True)  # the next to open is last
        self._open: dict[int, list[_Interval]] = {}

    def open_at(self, model_id: int, at: datetime) -> list[_SymptomAt]:
        pending = self._pending.get(model_id)
        current = self._open.get(model_id)
        if not pending and not current:
            return []
        if current is None:
            current = self._open[model_id] = []
        while pending and pending[-1].start <= at:
            current.append(pending.pop())
        if current and any(i.end <= at for i in current):
            current[:] = [i for i in current if i.end > at]
        found: list[_SymptomAt] = []
        for interval in current:
            symptom: Symptom = interval.item
            seen = min(ensure_utc(symptom.last_seen_at), at)
            found.append(_SymptomAt(symptom.kind, symptom.severity, interval.start, seen))
        return found


@dataclass
class _VersionAt:
    """A version as the context reads it: number, stage and ``promoted_at`` as they stood, metrics, evaluation."""

    version: int
    stage: str
    promoted_at: datetime | None
    metrics: dict[str, Any] = field(default_factory=dict)
    evaluation: dict[str, Any] | None = None


class VersionHistory:
    """Each model's versions as they stood while a tick was planned.

    Versions change after planning (an action promotes, registers or rolls
    back at its tick's time), so a change at time ``p`` is seen by the ticks
    after ``p``. A version exists from the earliest of its creation, its first
    promotion and the start of the action run that made it. It is in
    production from each of its promotions until the next promotion of the
    model; once promoted and no longer in production it is archived, unless a
    rollback left it (then it is rejected from that time on). Promotions come
    from the rows and from the ``version.promoted`` audit events.
    """

    def __init__(self, versions: Iterable[ModelVersion], promotions: Iterable[tuple[datetime, int, int]],
                 run_starts: dict[int, datetime]) -> None:
        rows: dict[int, list[ModelVersion]] = {}
        for version in versions:
            rows.setdefault(version.model_id, []).append(version)
        events: dict[int, set[tuple[datetime, int]]] = {}
        for time, model_id, number in promotions:
            events.setdefault(model_id, set()).add((ensure_utc(time), number))
        for model_id, own in rows.items():
            for version in own:
                if version.promoted_at is not None:
                    events.setdefault(model_id, set()).add((ensure_utc(version.promoted_at), version.version))
        self._rows = {m: sorted(own, key=lambda v: v.version) for m, own in rows.items()}
        self._promotions = {m: sorted(found) for m, found in events.items()}
        self._exists = {m: {v.version: self._exists_from(v, run_starts, self._promotions.get(m, [])) for v in own}
                        for m, own in self._rows.items()}
        self._changes = {m: self._change_points(m) for m in self._rows}
        self._cache: dict[int, tuple[datetime, datetime, list[_VersionAt]]] = {}  # valid for (from, until]

    @staticmethod
    def _exists_from(version: ModelVersion, run_starts: dict[int, datetime],
                     promotions: list[tuple[datetime, int]]) -> datetime:
        times = [ensure_utc(version.created_at)]
        times.extend(time for time, number in promotions if number == version.version)
        if version.created_by_action_run_id is not None and version.created_by_action_run_id in run_starts:
            times.append(run_starts[version.created_by_action_run_id])
        return min(times)

    @staticmethod
    def _rejected_at(version: ModelVersion) -> datetime | None:
        """When a rollback left this version (then marked rejected), if one did."""
        if version.stage == Stage.rejected.value and version.promoted_at is not None and version.retired_at:
            return ensure_utc(version.retired_at)
        return None

    def _change_points(self, model_id: int) -> list[datetime]:
        points = {time for time, _ in self._promotions.get(model_id, [])}
        points.update(self._exists[model_id].values())
        for version in self._rows[model_id]:
            rejected = self._rejected_at(version)
            if rejected is not None:
                points.add(rejected)
        return sorted(points)

    def at(self, model_id: int, at: datetime) -> list[_VersionAt]:
        """The model's versions as the tick at ``at`` saw them, in version order."""
        cached = self._cache.get(model_id)
        if cached is not None and cached[0] < at <= cached[1]:
            return cached[2]
        if model_id not in self._rows:
            return []
        changes = self._changes[model_id]
        index = bisect.bisect_left(changes, at)  # the changes strictly before the tick
        snapshot = self._snapshot(model_id, at)
        self._cache[model_id] = (changes[index - 1] if index else _DAWN, changes[index] if index < len(changes)
                                 else _NEVER, snapshot)
        return snapshot

    def _snapshot(self, model_id: int, at: datetime) -> list[_VersionAt]:
        promotions = [(time, number) for time, number in self._promotions.get(model_id, []) if time < at]
        production = promotions[-1][1] if promotions else None
        last_promoted = {number: time for time, number in promotions}
        result: list[_VersionAt] = []
        for version in self._rows[model_id]:
            if self._exists[model_id][version.version] >= at:
                continue
            promoted_at = last_promoted.get(version.version)
            if version.version == production:
                stage = Stage.production.value
            elif promoted_at is not None:
                rejected = self._rejected_at(version)
                stage = Stage.rejected.value if rejected is not None and rejected < at else Stage.archived.value
            else:
                stage = version.stage if version.stage in (Stage.candidate.value, Stage.rejected.value) \
                    else Stage.candidate.value
            evaluation = version.evaluation if version.evaluation and promoted_at is not None else None
            result.append(_VersionAt(version.version, stage, promoted_at, dict(version.metrics or {}), evaluation))
        return result


class _RunAt:
    """An action run as the busy rule names it in a reason: ``action run 7 (retrain, running)``."""

    __slots__ = ("id", "model_id", "action", "state")

    def __init__(self, run: ActionRun, state: str) -> None:
        self.id, self.model_id, self.action, self.state = run.id, run.model_id, run.action, state

    def __str__(self) -> str:
        return f"action run {self.id} ({self.action}, {self.state})"


class RunHistory:
    """The action runs in flight while each tick was planned.

    A run is dispatched after the planning of its tick, so it holds its model
    from the next tick on (``created_at`` before the tick), until it finished:
    a run that finished at the tick itself was still running while that tick
    was planned, unless the planner cancelled it then. The set of a model's
    runs in flight changes only at those times, so it is recomputed only then.
    """

    def __init__(self, runs: Iterable[ActionRun]) -> None:
        self._by_model: dict[int, list[ActionRun]] = {}
        for run in runs:
            self._by_model.setdefault(run.model_id, []).append(run)
        self._points = {m: self._change_points(runs) for m, runs in self._by_model.items()}
        self._cache: dict[int, tuple[datetime, datetime, list[Any]]] = {}

    @staticmethod
    def _change_points(runs: list[ActionRun]) -> list[datetime]:
        points: set[datetime] = set()
        for run in runs:
            for value in (run.created_at, run.started_at, run.finished_at):
                if value is not None:
                    points.update((ensure_utc(value), ensure_utc(value) + _TICK))
            if run.scheduled_for is not None:
                points.add(ensure_utc(run.scheduled_for))
        return sorted(points)

    @property
    def model_ids(self) -> list[int]:
        return list(self._by_model)

    def busy_at(self, model_id: int, at: datetime) -> list[Any]:
        """The model's runs in flight while the tick at ``at`` was planned, as the busy rule names them."""
        cached = self._cache.get(model_id)
        if cached is not None and cached[0] <= at < cached[1]:
            return cached[2]
        points = self._points.get(model_id, [])
        index = bisect.bisect_right(points, at)
        valid = (points[index - 1] if index else datetime.min.replace(tzinfo=timezone.utc),
                 points[index] if index < len(points) else _NEVER)
        busy = [_RunAt(run, state) for run in self._by_model.get(model_id, ())
                if (state := self._state_at(run, at)) is not None]
        self._cache[model_id] = (valid[0], valid[1], busy)
        return busy

    @staticmethod
    def _state_at(run: ActionRun, at: datetime) -> str | None:
        """The run's state while the tick at ``at`` was planned, or None if it did not hold its model."""
        if ensure_utc(run.created_at) >= at:
            return None
        finished = ensure_utc(run.finished_at) if run.finished_at is not None else None
        if finished is not None and (finished < at or (finished == at and run.state == ActionState.cancelled.value)):
            return None
        if finished is None and run.state not in queries.IN_FLIGHT_STATES:
            return None  # ended without a time: nothing to go by
        started = ensure_utc(run.started_at) if run.started_at is not None else None
        scheduled = ensure_utc(run.scheduled_for) if run.scheduled_for is not None else None
        if started is not None and started < at:
            return ActionState.running.value
        if scheduled is not None and scheduled > at:
            return ActionState.scheduled.value
        return ActionState.pending.value


class Intervals:
    """Items in force over ``[start, end)``: what is in force at a tick, recomputed only when that changes."""

    def __init__(self, items: Iterable[tuple[datetime, datetime | None, Any]]) -> None:
        self._items = [_Interval(ensure_utc(start), ensure_utc(end) if end is not None else _NEVER, item)
                       for start, end, item in items if end is None or ensure_utc(end) > ensure_utc(start)]
        self._items.sort(key=lambda i: i.start)
        self._points = sorted({i.start for i in self._items} | {i.end for i in self._items})
        self._valid: tuple[datetime, datetime] | None = None
        self._current: list[Any] = []

    def __bool__(self) -> bool:
        return bool(self._items)

    def at(self, at: datetime) -> list[Any]:
        """The items in force at ``at``, in the order of their start."""
        if self._valid is not None and self._valid[0] <= at < self._valid[1]:
            return self._current
        index = bisect.bisect_right(self._points, at)
        self._valid = (self._points[index - 1] if index else datetime.min.replace(tzinfo=timezone.utc),
                       self._points[index] if index < len(self._points) else _NEVER)
        self._current = [i.item for i in self._items if i.start <= at < i.end]
        return self._current


def pause_intervals(session: Session) -> Intervals:
    """Every pause over the time it was in force (:func:`knowledge.queries.pause_history`)."""
    return Intervals((ensure_utc(pause.paused_at), lifted, pause) for pause, lifted in queries.pause_history(session))


def block_intervals(session: Session, until: datetime) -> Intervals:
    """Verification blocks over the time each held: from the verdict to a person lifting it or a new symptom.

    Items are ``(model_id, policy_name, run)``; as the live query does, when
    several runs block one policy on one model, the latest verdict names it.
    """
    items: list[tuple[datetime, datetime | None, Any]] = []
    for run, policy_name in queries.blocking_runs(session, until):
        assert run.verdict_at is not None
        start = ensure_utc(run.verdict_at)
        ends = [ensure_utc(run.block_lifted_at)] if run.block_lifted_at is not None else []
        symptom = queries.first_symptom_after(session, run.model_id, start)
        if symptom is not None:
            ends.append(symptom)
        items.append((start, min(ends) if ends else None, (run.model_id, policy_name, run)))
    return Intervals(items)


def pauses_by_key(pauses: Sequence[Pause]) -> dict[tuple[str, str], Pause]:
    return {(pause.scope, pause.name): pause for pause in pauses}
