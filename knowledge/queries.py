"""Reads and writes that more than one stage (or the dashboard) needs.

Who calls it: the monitor writes observations; analyze reads metric series and
opens or closes symptoms; the planner reads the latest signals, open symptoms,
recent decisions and in-flight actions, keeps the pending/firing state of
policies with ``for`` and expires decisions left awaiting approval; the CLI
pauses and resumes policies and models; the executor and the dashboard read
decisions and action runs. Aggregation happens in SQL, never by loading whole
tables.
"""

from __future__ import annotations

import functools
import hashlib
import re
from collections.abc import Callable, Collection, Iterable, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import String, and_, exists, func, insert, or_, type_coerce, update
from sqlalchemy.engine import Dialect
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import make_transient_to_detached
from sqlmodel import Session, col, select

from knowledge import audit
from knowledge.tables import (
    BLOCKING_VERDICTS,
    ActionRun,
    ActionState,
    AuditEvent,
    Canary,
    CanaryState,
    Decision,
    DecisionStatus,
    KnowledgeBase,
    ManagedModel,
    ModelVersion,
    Observation,
    Pause,
    PauseScope,
    PolicyState,
    PolicyVersion,
    Symptom,
    SymptomStatus,
    Tick,
    Verdict,
)
from mape._util.timeutil import ensure_utc, utcnow

IN_FLIGHT_STATES = (ActionState.pending.value, ActionState.scheduled.value, ActionState.running.value)
ACTED_STATUSES = (DecisionStatus.proposed.value, DecisionStatus.approved.value, DecisionStatus.awaiting_approval.value)
#: The subject of a ``version.promoted`` audit event: ``model_id=3 version 2 (production)``.
_PROMOTED_SUBJECT = re.compile(r"model_id=(\d+) version (\d+)\b")


# --------------------------------------------------------------------------- ticks


def begin_tick(session: Session, at: datetime, *, controller_id: str, flow_run_id: str | None = None) -> tuple[Tick, bool]:
    """Return ``controller_id``'s tick row for logical time ``at`` and whether it is new (False: a repeated tick).

    Each controller has its own ticks: controllers sharing a fleet tick at the same times.
    """
    mine = select(Tick).where(Tick.at == at, Tick.controller_id == controller_id)
    existing = session.exec(mine).first()
    if existing is not None:
        return existing, False
    tick = Tick(at=at, controller_id=controller_id, flow_run_id=flow_run_id)
    try:
        with session.begin_nested():
            session.add(tick)
            session.flush()
    except IntegrityError:
        return session.exec(mine).one(), False
    return tick, True


def finish_tick(session: Session, tick: Tick, *, status: str, summary: dict[str, Any]) -> None:
    tick.finished_at = utcnow()
    tick.status = status
    tick.summary = summary
    session.add(tick)
    session.flush()


# --------------------------------------------------------------------------- models


def models_by_name(session: Session) -> dict[str, ManagedModel]:
    return {m.name: m for m in session.exec(select(ManagedModel))}


# --------------------------------------------------------------------------- observations


def add_observations(session: Session, observations: Iterable[Observation | dict[str, Any]]) -> int:
    """Store observations in one bulk insert (a tick writes thousands); returns how many.

    Each is an :class:`Observation` or its column values as a dict
    (:func:`knowledge.tables.observation_row`). Objects are read, not attached
    to the session: their ``id`` stays unset, and nothing else refers to them
    once stored.
    """
    table = Observation.__table__  # type: ignore[attr-defined]  # Core: no unit-of-work bookkeeping per row
    rows = [o if isinstance(o, dict) else _observation_row(o) for o in observations]
    if not rows:
        return 0
    connection = session.connection()
    if connection.dialect.name != "sqlite":
        session.execute(insert(table), rows)
        return len(rows)
    # SQLite: one executemany of values converted by the columns' own bind processors, a tick's repeated time,
    # model, sensor and metric once each (Core converts every value of every row: four times the cost of the insert)
    statement, names, processors = _observation_insert(connection.dialect)
    converted: list[dict[Any, Any]] = [{} for _ in names]
    parameters = []
    for row in rows:
        values = []
        for name, process, seen in zip(names, processors, converted):
            value = row[name]
            if process is None:
                values.append(value)
            elif name in _REPEATED:
                if value not in seen:
                    seen[value] = process(value)
                values.append(seen[value])
            else:
                values.append(process(value))
        parameters.append(tuple(values))
    connection.exec_driver_sql(statement, parameters)
    return len(rows)


_REPEATED = frozenset({"time", "model_id", "sensor", "metric"})


@functools.lru_cache(maxsize=8)
def _observation_insert(dialect: Dialect) -> tuple[str, list[str], list[Callable[[Any], Any] | None]]:
    """The positional INSERT of an observation for ``dialect``, its parameters' names and their bind processors."""
    table = Observation.__table__  # type: ignore[attr-defined]
    compiled = insert(table).compile(dialect=dialect, column_keys=["time", "model_id", "sensor", "metric", "value",
                                                                    "labels"])
    assert compiled.positional and compiled.positiontup is not None
    names = list(compiled.positiontup)
    return str(compiled), names, [table.c[name].type.dialect_impl(dialect).bind_processor(dialect) for name in names]


def _observation_row(observation: Observation) -> dict[str, Any]:
    """The column values of an observation, from its ``__dict__`` (the attributes' instrumentation costs more)."""
    values = observation.__dict__
    try:
        labels = values["labels"]
        return {"time": values["time"], "model_id": values["model_id"], "sensor": values["sensor"],
                "metric": values["metric"], "value": values["value"], "labels": labels if labels is not None else {}}
    except KeyError:  # an attribute not loaded (expired, deferred): read through the instrumentation
        o = observation
        return {"time": o.time, "model_id": o.model_id, "sensor": o.sensor, "metric": o.metric, "value": o.value,
                "labels": o.labels if o.labels is not None else {}}


def metric_series(
    session: Session, model_id: int, metric: str, *, limit: int, until: datetime | None = None,
    labels: dict[str, Any] | None = None,
) -> list[Observation]:
    """The latest ``limit`` observations of one metric of one model, newest first.

    ``labels`` filters in Python on the (few) rows returned when the metric has
    several series (per-feature metrics); summary metrics have empty labels.
    """
    query = select(Observation).where(Observation.model_id == model_id, Observation.metric == metric)
    if until is not None:
        query = query.where(Observation.time <= until)
    query = query.order_by(col(Observation.time).desc(), col(Observation.id).desc())
    if labels is None:
        return list(session.exec(query.limit(limit)))
    rows = [o for o in session.exec(query.limit(limit * 200)) if all(o.labels.get(k) == v for k, v in labels.items())]
    return rows[:limit]


def latest_metrics(session: Session, model_id: int, *, until: datetime | None = None, prefix: str | None = None,
                   summary_only: bool = True) -> dict[str, Observation]:
    """The newest observation of every metric of a model (summary metrics: empty labels), by metric name."""
    base = [Observation.model_id == model_id]
    if until is not None:
        base.append(Observation.time <= until)
    if prefix is not None:
        base.append(col(Observation.metric).startswith(prefix))
    newest = (
        select(Observation.metric, func.max(Observation.time).label("t"))
        .where(*base)
        .group_by(Observation.metric)
        .subquery()
    )
    query = select(Observation).join(
        newest, and_(Observation.metric == newest.c.metric, Observation.time == newest.c.t)
    ).where(Observation.model_id == model_id)
    result: dict[str, Observation] = {}
    for obs in session.exec(query.order_by(col(Observation.id))):
        if summary_only and obs.labels:
            continue
        result[obs.metric] = obs
    return result


def observations_between(session: Session, model_id: int, start: datetime, end: datetime,
                         metrics: Sequence[str] | None = None) -> list[Observation]:
    query = select(Observation).where(Observation.model_id == model_id, Observation.time >= start, Observation.time <= end)
    if metrics:
        query = query.where(col(Observation.metric).in_(list(metrics)))
    return list(session.exec(query.order_by(col(Observation.time), col(Observation.id))))


# --------------------------------------------------------------------------- symptoms


def open_symptom(session: Session, model_id: int, kind: str) -> Symptom | None:
    return session.exec(
        select(Symptom).where(Symptom.model_id == model_id, Symptom.kind == kind,
                              Symptom.status == SymptomStatus.open.value)
    ).first()


def open_symptoms(session: Session, model_id: int | None = None) -> list[Symptom]:
    query = select(Symptom).where(Symptom.status == SymptomStatus.open.value)
    if model_id is not None:
        query = query.where(Symptom.model_id == model_id)
    return list(session.exec(query.order_by(col(Symptom.opened_at))))


# --------------------------------------------------------------------------- policies


def record_policy_version(session: Session, *, name: str, text: str, source: str = "", author: str = "",
                          actor: str = "controller") -> PolicyVersion:
    """Store a loaded policy version once per (name, sha256); audit the first load of each version."""
    sha = hashlib.sha256(text.encode()).hexdigest()
    existing = session.exec(select(PolicyVersion).where(PolicyVersion.name == name, PolicyVersion.sha256 == sha)).first()
    if existing is not None:
        return existing
    version = PolicyVersion(name=name, sha256=sha, text=text, source=source, author=author)
    session.add(version)
    session.flush()
    audit.record(session, actor=actor, kind="policy.loaded", subject=f"policy {name}",
                 payload={"sha256": sha, "source": source, "author": author})
    return version


def record_policy_versions(session: Session, policies: Sequence[tuple[str, str, str, str]], *,
                           actor: str = "controller") -> dict[str, PolicyVersion]:
    """:func:`record_policy_version` for many ``(name, text, source, author)`` at once; by name.

    One query finds the versions already stored; only new ones are inserted
    (and audited).
    """
    wanted = {name: (text, source, author, hashlib.sha256(text.encode()).hexdigest())
              for name, text, source, author in policies}
    if not wanted:
        return {}
    found = {(v.name, v.sha256): v for v in session.exec(
        select(PolicyVersion).where(col(PolicyVersion.name).in_(list(wanted))))}
    result: dict[str, PolicyVersion] = {}
    for name, (text, source, author, sha) in wanted.items():
        version = found.get((name, sha))
        result[name] = version if version is not None else record_policy_version(
            session, name=name, text=text, source=source, author=author, actor=actor)
    return result


def policy_version(session: Session, name: str, sha256: str) -> PolicyVersion | None:
    """The stored version ``sha256`` of policy ``name``, if it was ever loaded."""
    return session.exec(select(PolicyVersion).where(PolicyVersion.name == name, PolicyVersion.sha256 == sha256)).first()


# --------------------------------------------------------------------------- decisions and actions


def add_decision(session: Session, decision: Decision) -> tuple[Decision, bool]:
    """Insert a decision unless one with the same dedup key exists; returns (row, created)."""
    existing = session.exec(select(Decision).where(Decision.dedup_key == decision.dedup_key)).first()
    if existing is not None:
        return existing, False
    try:
        with session.begin_nested():
            session.add(decision)
            session.flush()
    except IntegrityError:
        return session.exec(select(Decision).where(Decision.dedup_key == decision.dedup_key)).one(), False
    return decision, True


def last_action_decision(session: Session, model_id: int, action: str, *,
                         statuses: Sequence[str] = ACTED_STATUSES) -> Decision | None:
    """The most recent decision to take ``action`` on a model that was not suppressed, rejected or dry-run."""
    return session.exec(
        select(Decision)
        .where(Decision.model_id == model_id, Decision.action == action, col(Decision.status).in_(list(statuses)))
        .order_by(col(Decision.created_at).desc(), col(Decision.id).desc())
        .limit(1)
    ).first()


def last_action_times(session: Session, model_id: int, at: datetime) -> dict[str, float]:
    """Seconds from the last acting decision of each action type on a model, made before ``at``, to ``at``.

    One aggregate query. Decisions made at ``at`` itself (the tick's own) do not count, so a tick planned
    again sees the context it saw the first time.
    """
    rows = session.exec(
        select(Decision.action, func.max(Decision.created_at))
        .where(Decision.model_id == model_id, col(Decision.status).in_(list(ACTED_STATUSES)),
               Decision.created_at < at)
        .group_by(Decision.action)
    )
    return {action: (at - ensure_utc(last)).total_seconds() for action, last in rows if last is not None}


def in_flight_actions(session: Session, model_id: int | None = None) -> list[ActionRun]:
    query = select(ActionRun).where(col(ActionRun.state).in_(IN_FLIGHT_STATES))
    if model_id is not None:
        query = query.where(ActionRun.model_id == model_id)
    return list(session.exec(query.order_by(col(ActionRun.id))))


def knowledge_base_id(session: Session) -> str:
    """This knowledge base's identity (migration 0008 writes it; a schema made otherwise gets one on first use)."""
    row = session.exec(select(KnowledgeBase).order_by(col(KnowledgeBase.id)).limit(1)).first()
    if row is None:
        import uuid

        row = KnowledgeBase(instance=str(uuid.uuid4()))
        session.add(row)
        session.flush()
    return row.instance


def running_actions(session: Session) -> list[ActionRun]:
    """Action runs in ``running``, oldest first: what reconciliation checks for a dead process."""
    return list(session.exec(select(ActionRun).where(ActionRun.state == ActionState.running.value)
                             .order_by(col(ActionRun.id))))


def action_runs_by_flow_run(session: Session, flow_run_ids: Iterable[str]) -> list[ActionRun]:
    """Action runs whose attempts ran as these orchestrator flow runs."""
    ids = list(flow_run_ids)
    if not ids:
        return []
    return list(session.exec(select(ActionRun).where(col(ActionRun.flow_run_id).in_(ids)).order_by(col(ActionRun.id))))


def run_of_decision(session: Session, decision_id: int) -> ActionRun | None:
    """The action run a decision became, if any (a decision has at most one)."""
    return session.exec(select(ActionRun).where(ActionRun.decision_id == decision_id)).first()


def scheduled_runs(session: Session) -> list[tuple[ActionRun, Decision]]:
    """Action runs waiting for their time (``scheduled``), with their decisions, oldest first."""
    rows = session.exec(
        select(ActionRun, Decision).join(Decision, col(Decision.id) == col(ActionRun.decision_id))
        .where(ActionRun.state == ActionState.scheduled.value).order_by(col(ActionRun.id))
    )
    return [(run, decision) for run, decision in rows]


def cancel_scheduled_run(session: Session, run: ActionRun, at: datetime, *, actor: str, reason: str) -> bool:
    """Cancel a run that has not started (compare-and-set on ``scheduled``); False if it started first.

    Appends an ``action.cancelled`` audit event naming the reason.
    """
    result = session.execute(
        update(ActionRun)
        .where(col(ActionRun.id) == run.id, col(ActionRun.state) == ActionState.scheduled.value)
        .values(state=ActionState.cancelled.value, message=reason, finished_at=at, updated_at=at)
        .execution_options(synchronize_session=False)
    )
    if result.rowcount != 1:  # type: ignore[attr-defined]
        return False
    session.refresh(run)
    audit.record(session, actor=actor, kind="action.cancelled", subject=str(run), time=at,
                 payload={"decision": run.decision_id, "reason": reason})
    return True


def reschedule_run(session: Session, run: ActionRun, to: datetime, at: datetime, *, actor: str, reason: str,
                   payload: dict[str, Any] | None = None) -> bool:
    """Move a run that has not started to ``to`` (compare-and-set on ``scheduled``); False if it started first.

    Appends an ``action.rescheduled`` audit event with the old and new times, the reason and ``payload``.
    """
    before = run.scheduled_for
    result = session.execute(
        update(ActionRun)
        .where(col(ActionRun.id) == run.id, col(ActionRun.state) == ActionState.scheduled.value)
        .values(scheduled_for=to, message=reason, updated_at=at)
        .execution_options(synchronize_session=False)
    )
    if result.rowcount != 1:  # type: ignore[attr-defined]
        return False
    session.refresh(run)
    audit.record(session, actor=actor, kind="action.rescheduled", subject=str(run), time=at,
                 payload={"decision": run.decision_id, "from": before.isoformat() if before else None,
                          "to": to.isoformat(), "reason": reason, **(payload or {})})
    return True


def decisions_to_dispatch(session: Session, *, models: Collection[int] | None = None) -> list[Decision]:
    """Decisions that should become action runs and have none yet (proposed, or approved by a person).

    With ``models``, only the decisions about those models.
    """
    query = (
        select(Decision)
        .outerjoin(ActionRun, col(ActionRun.decision_id) == Decision.id)
        .where(col(Decision.status).in_([DecisionStatus.proposed.value, DecisionStatus.approved.value]),
               col(ActionRun.id).is_(None))
        .order_by(col(Decision.id))
    )
    if models is not None:
        query = query.where(col(Decision.model_id).in_(list(models)))
    return list(session.exec(query))


def decisions(session: Session, *, model_id: int | None = None, status: str | None = None,
              since: datetime | None = None, limit: int = 1000, newest_first: bool = False) -> list[Decision]:
    query = select(Decision)
    if model_id is not None:
        query = query.where(Decision.model_id == model_id)
    if status is not None:
        query = query.where(Decision.status == status)
    if since is not None:
        query = query.where(Decision.created_at >= since)
    order = col(Decision.id).desc() if newest_first else col(Decision.id)
    return list(session.exec(query.order_by(order).limit(limit)))


def action_runs(session: Session, *, model_id: int | None = None, limit: int = 1000) -> list[ActionRun]:
    query = select(ActionRun)
    if model_id is not None:
        query = query.where(ActionRun.model_id == model_id)
    return list(session.exec(query.order_by(col(ActionRun.id)).limit(limit)))


# --------------------------------------------------------------------------- fleet-wide reads (one query each)


def latest_summary_metrics_fleet(
    session: Session, model_ids: Sequence[int], *, until: datetime, since: datetime | None = None,
    prefixes: Sequence[str] = ("drift.", "performance."),
) -> dict[int, dict[str, Any]]:
    """The newest summary observation (empty labels) of each metric of each model, in one query.

    ``since`` bounds the scan to recent rows (the staleness bound): with the
    (model, metric, time) index, a planning pass then reads only the last ticks.
    The values are rows with the columns ``id``, ``model_id``, ``metric``,
    ``time`` and ``value`` (not whole observations: a planning pass reads
    thousands and needs nothing else).
    """
    if not model_ids:
        return {}
    where = [col(Observation.model_id).in_(list(model_ids)), Observation.time <= until]
    if since is not None:
        where.append(Observation.time >= since)
    prefix_match = [col(Observation.metric).startswith(p) for p in prefixes]
    newest = (
        select(Observation.model_id, Observation.metric, func.max(Observation.time).label("t"))
        .where(*where, or_(*prefix_match), ~col(Observation.metric).startswith("drift.feature."),
               ~col(Observation.metric).startswith("gpu.device."),
               ~col(Observation.metric).startswith("quality.column."))
        .group_by(Observation.model_id, Observation.metric)
        .subquery()
    )
    query = select(Observation.id, Observation.model_id, Observation.metric, Observation.time, Observation.value,
                   Observation.labels).join(newest, and_(
                       Observation.model_id == newest.c.model_id, Observation.metric == newest.c.metric,
                       Observation.time == newest.c.t))
    result: dict[int, dict[str, Any]] = {}
    for row in session.exec(query.order_by(col(Observation.id))):
        if not row.labels:
            result.setdefault(row.model_id, {})[row.metric] = row
    return result


def recent_tick_times(session: Session, *, until: datetime, n: int) -> list[datetime]:
    """The logical times of the newest ``n`` ticks at or before ``until`` (of any controller), newest first."""
    query = select(Tick.at).where(Tick.at <= until).distinct().order_by(col(Tick.at).desc()).limit(n)
    return [ensure_utc(at) for at in session.exec(query)]


def metric_rows_fleet(session: Session, model_ids: Sequence[int], metrics: Sequence[str], *, since: datetime,
                      until: datetime) -> dict[tuple[int, str], list[Any]]:
    """Every observation of ``metrics`` of the models with ``since <= time <= until``, in one query.

    By ``(model_id, metric)``, newest first (time, then id), as rows of
    ``id``, ``model_id``, ``metric``, ``time``, ``value`` and ``labels``: what
    :func:`metric_series` returns one model and metric at a time, for a fleet
    and a bounded stretch of time (the Analyze stage's last ticks).
    """
    result: dict[tuple[int, str], list[Any]] = {}
    if not model_ids or not metrics:
        return result
    query = (select(Observation.id, Observation.model_id, Observation.metric, Observation.time, Observation.value,
                    Observation.labels)
             .where(col(Observation.model_id).in_(list(model_ids)), col(Observation.metric).in_(list(metrics)),
                    Observation.time >= since, Observation.time <= until)
             .order_by(col(Observation.time).desc(), col(Observation.id).desc()))
    for row in session.exec(query):
        result.setdefault((row.model_id, row.metric), []).append(row)
    return result


def open_symptoms_fleet(session: Session, model_ids: Sequence[int]) -> dict[int, list[Symptom]]:
    result: dict[int, list[Symptom]] = {}
    if not model_ids:
        return result
    query = select(Symptom).where(Symptom.status == SymptomStatus.open.value,
                                  col(Symptom.model_id).in_(list(model_ids)))
    for symptom in session.exec(query.order_by(col(Symptom.opened_at))):
        result.setdefault(symptom.model_id, []).append(symptom)
    return result


def versions_fleet(session: Session, model_ids: Sequence[int]) -> dict[int, list[ModelVersion]]:
    result: dict[int, list[ModelVersion]] = {}
    if not model_ids:
        return result
    query = select(ModelVersion).where(col(ModelVersion.model_id).in_(list(model_ids)))
    for version in session.exec(query.order_by(col(ModelVersion.version))):
        result.setdefault(version.model_id, []).append(version)
    return result


def version_summaries_fleet(session: Session, model_ids: Sequence[int]) -> dict[int, list[Any]]:
    """Like :func:`versions_fleet`, as rows of ``model_id``, ``version``, ``stage``, ``promoted_at``, ``metrics``
    and ``evaluation``.

    What an evaluation context reads of the versions, without building objects.
    """
    result: dict[int, list[Any]] = {}
    if not model_ids:
        return result
    query = (select(ModelVersion.model_id, ModelVersion.version, ModelVersion.stage, ModelVersion.promoted_at,
                    ModelVersion.metrics, ModelVersion.evaluation)
             .where(col(ModelVersion.model_id).in_(list(model_ids))).order_by(col(ModelVersion.version)))
    for row in session.exec(query):
        result.setdefault(row.model_id, []).append(row)
    return result


def last_action_times_fleet(session: Session, model_ids: Sequence[int], at: datetime) -> dict[int, dict[str, float]]:
    """Like :func:`last_action_times`, for many models in one grouped query."""
    result: dict[int, dict[str, float]] = {}
    if not model_ids:
        return result
    rows = session.exec(
        select(Decision.model_id, Decision.action, func.max(Decision.created_at))
        .where(col(Decision.model_id).in_(list(model_ids)), col(Decision.status).in_(list(ACTED_STATUSES)),
               Decision.created_at < at)
        .group_by(Decision.model_id, Decision.action)
    )
    for model_id, action, last in rows:
        if last is not None:
            result.setdefault(model_id, {})[action] = (at - ensure_utc(last)).total_seconds()
    return result


def acting_decisions_fleet(session: Session, *, since: datetime, until: datetime,
                           statuses: Sequence[str] = ACTED_STATUSES) -> list[Any]:
    """Every decision with one of ``statuses`` created in ``(since, until]``, oldest first (one query).

    Rows of the columns the planner's rules read (id, model_id, policy_name,
    action, status, created_at, tick_at, follows_run_id), not whole decisions:
    their evidence is not loaded.
    """
    return list(session.exec(
        select(Decision.id, Decision.model_id, Decision.policy_name, Decision.action, Decision.status,
               Decision.created_at, Decision.tick_at, Decision.follows_run_id)
        .where(col(Decision.status).in_(list(statuses)), Decision.created_at > since, Decision.created_at <= until)
        .order_by(col(Decision.created_at), col(Decision.id))
    ))


def decisions_at_tick(session: Session, at: datetime) -> list[Decision]:
    """The decisions a planning pass stored for the tick at ``at``, in id order."""
    return list(session.exec(select(Decision).where(Decision.tick_at == at).order_by(col(Decision.id))))


def add_decisions(session: Session, rows: Sequence[dict[str, Any]]) -> tuple[list[Decision], list[bool]]:
    """Insert many decisions (column values) in one statement; returns the stored rows and which are new.

    One bulk ``INSERT ... RETURNING id``, so a planning pass costs one round
    trip and no validation or unit-of-work bookkeeping per decision. The rows
    returned for acting decisions (which a person or the executor changes
    later) are attached to the session as persistent objects; the others
    (dry-run, suppressed: never changed) are plain copies of what was
    stored, not attached. If another
    writer stored one of the same dedup keys first (an integrity error), falls
    back to :func:`add_decision` row by row: the stored row wins and nothing is
    duplicated.
    """
    if not rows:
        return [], []
    try:
        with session.begin_nested():
            # ids are matched by dedup key: asking for RETURNING in parameter order makes SQLite insert row by row
            table = Decision.__table__  # type: ignore[attr-defined]  # Core: no ORM bookkeeping per row
            ids = dict(session.execute(insert(table).returning(table.c.dedup_key, table.c.id),
                                       list(rows)).tuples().all())
        stored = [_stored_decision(session, row, ids[row["dedup_key"]], attach=row["status"] in ACTED_STATUSES)
                  for row in rows]
        return stored, [True] * len(stored)
    except IntegrityError:
        pairs = [add_decision(session, Decision(**row)) for row in rows]
        return [row for row, _ in pairs], [created for _, created in pairs]


def _stored_decision(session: Session, values: dict[str, Any], id_: int, *, attach: bool) -> Decision:
    """The object of a decision row just inserted with ``values``, built without a query.

    Built the way the ORM builds objects it loads (no validation: the values
    were validated when the row was made); with ``attach``, added to the
    session as a persistent object.
    """
    decision = Decision._sa_class_manager.new_instance()  # type: ignore[attr-defined]
    decision.__dict__.update(values, id=id_, decided_by=None, decided_at=None, comment="", follows_run_id=None)
    if attach:
        make_transient_to_detached(decision)
        session.add(decision)
    return decision


def count_acting_decisions(session: Session, model_id: int, policy_name: str, *, since: datetime,
                           until: datetime) -> int:
    """How many acting decisions (proposed, awaiting approval, approved) a policy made for a model in ``(since, until]``."""
    return session.exec(
        select(func.count()).select_from(Decision)
        .where(Decision.model_id == model_id, Decision.policy_name == policy_name,
               col(Decision.status).in_(list(ACTED_STATUSES)), Decision.created_at > since,
               Decision.created_at <= until)
    ).one()


def expire_decisions(session: Session, at: datetime, *, actor: str) -> list[Decision]:
    """Mark ``awaiting_approval`` decisions whose ``expires_at`` is at or before ``at`` as ``expired``.

    Each one is changed with a compare-and-set on its status, so a person who
    approves or rejects it at the same moment wins or loses cleanly, never both;
    each expiry appends a ``decision.expired`` audit event. Returns the decisions
    this call expired (none on a repeated call).
    """
    at = ensure_utc(at)
    due = session.exec(
        select(Decision)
        .where(Decision.status == DecisionStatus.awaiting_approval.value, col(Decision.expires_at).is_not(None),
               col(Decision.expires_at) <= at)
        .order_by(col(Decision.id))
    ).all()
    expired: list[Decision] = []
    for decision in due:
        result = session.execute(
            update(Decision)
            .where(col(Decision.id) == decision.id, col(Decision.status) == DecisionStatus.awaiting_approval.value)
            .values(status=DecisionStatus.expired.value, decided_by=actor, decided_at=at)
            .execution_options(synchronize_session=False)
        )
        if result.rowcount != 1:  # type: ignore[attr-defined]
            continue
        session.refresh(decision)
        assert decision.expires_at is not None
        audit.record(session, actor=actor, kind="decision.expired", subject=str(decision), time=at,
                     payload={"decision_id": decision.id, "model_id": decision.model_id,
                              "policy": decision.policy_name, "action": decision.action,
                              "created_at": ensure_utc(decision.created_at).isoformat(),
                              "expires_at": ensure_utc(decision.expires_at).isoformat()})
        expired.append(decision)
    return expired


# --------------------------------------------------------------------------- policy state (for / keep_firing_for)


def policy_state(session: Session, model_id: int, policy_name: str) -> PolicyState | None:
    return session.exec(
        select(PolicyState).where(PolicyState.model_id == model_id, PolicyState.policy_name == policy_name)
    ).first()


def policy_states_fleet(session: Session, policy_names: Sequence[str]) -> list[PolicyState]:
    """The stored state rows of the named policies, for every model (one query)."""
    if not policy_names:
        return []
    return list(session.exec(select(PolicyState).where(col(PolicyState.policy_name).in_(list(policy_names)))))


def save_policy_state(session: Session, state: PolicyState) -> tuple[PolicyState, bool]:
    """Store a policy's state; returns (row, saved).

    A new row whose (model, policy) another controller stored first is not
    saved: the stored row is returned with ``saved`` False, and the caller
    treats the other controller's evaluation as the one that counts.
    """
    if state.id is not None:
        session.add(state)
        session.flush()
        return state, True
    try:
        with session.begin_nested():
            session.add(state)
            session.flush()
    except IntegrityError:
        found = policy_state(session, state.model_id, state.policy_name)
        assert found is not None
        return found, False
    return state, True


# --------------------------------------------------------------------------- pauses


def _scope(scope: str | PauseScope) -> str:
    value = scope.value if isinstance(scope, PauseScope) else str(scope)
    if value not in {s.value for s in PauseScope}:
        raise ValueError(f"The 'scope' parameter of pause must be 'policy' or 'model'. Got {value!r} instead.")
    return value


def active_pause(session: Session, scope: str | PauseScope, name: str) -> Pause | None:
    """The pause of one policy or model, if it is paused."""
    return session.exec(select(Pause).where(Pause.scope == _scope(scope), Pause.name == name)).first()


def pauses(session: Session) -> list[Pause]:
    """Every pause in force, oldest first."""
    return list(session.exec(select(Pause).order_by(col(Pause.paused_at), col(Pause.id))))


def pause(session: Session, scope: str | PauseScope, name: str, *, actor: str, reason: str,
          at: datetime | None = None) -> tuple[Pause, bool]:
    """Pause a policy (all its decisions) or a model (every policy's decisions for it); audited.

    Returns (pause, created): pausing what is already paused changes nothing
    and returns the pause in force, with its original author and reason.
    """
    value = _scope(scope)
    existing = active_pause(session, value, name)
    if existing is not None:
        return existing, False
    row = Pause(scope=value, name=name, paused_by=actor, reason=reason, paused_at=ensure_utc(at or utcnow()))
    try:
        with session.begin_nested():
            session.add(row)
            session.flush()
    except IntegrityError:
        found = active_pause(session, value, name)
        assert found is not None
        return found, False
    audit.record(session, actor=actor, kind=f"{value}.paused", subject=f"{value} {name}",
                 payload={"reason": reason}, time=row.paused_at)
    return row, True


def resume(session: Session, scope: str | PauseScope, name: str, *, actor: str,
           at: datetime | None = None) -> Pause | None:
    """Lift the pause of a policy or model; audited. Returns the lifted pause, or None if it was not paused."""
    value = _scope(scope)
    existing = active_pause(session, value, name)
    if existing is None:
        return None
    session.delete(existing)
    session.flush()
    audit.record(session, actor=actor, kind=f"{value}.resumed", subject=f"{value} {name}", time=ensure_utc(at or utcnow()),
                 payload={"paused_by": existing.paused_by, "paused_at": ensure_utc(existing.paused_at).isoformat(),
                          "reason": existing.reason})
    return existing


# --------------------------------------------------------------------------- verification (policy verify)


def models_by_id(session: Session, model_ids: Iterable[int]) -> dict[int, ManagedModel]:
    ids = sorted(set(model_ids))
    if not ids:
        return {}
    return {m.id: m for m in session.exec(select(ManagedModel).where(col(ManagedModel.id).in_(ids)))
            if m.id is not None}


def policy_version_hashes(session: Session) -> dict[str, int]:
    """The sha256 of every stored policy version, to its row id (one narrow query)."""
    return {sha: id_ for id_, sha in session.exec(select(PolicyVersion.id, PolicyVersion.sha256)) if id_ is not None}


def policy_versions_by_id(session: Session, ids: Iterable[int]) -> list[PolicyVersion]:
    wanted = sorted(set(ids))
    if not wanted:
        return []
    return list(session.exec(select(PolicyVersion).where(col(PolicyVersion.id).in_(wanted))
                             .order_by(col(PolicyVersion.id))))


def runs_to_verify(session: Session, *, policy_sha256s: Iterable[str],
                   models: Collection[int] | None = None) -> list[tuple[ActionRun, Decision]]:
    """The action runs the verification stage looks at, with their decisions, oldest run first.

    Runs under verification (``verdict`` pending), and succeeded runs never
    verified whose decision was made by one of the policy versions
    ``policy_sha256s`` (those with ``verify``). A follow-up decision (made by a
    verdict: ``follows_run_id`` set) is never verified itself. A run that
    started a canary is verified only once the canary promoted its candidate
    (its steps are judged apart: :mod:`mape.plan.canary`). With ``models``, only those models' runs.
    """
    shas = sorted(set(policy_sha256s))
    condition: Any = col(ActionRun.verdict) == Verdict.pending.value
    if shas:
        # a run whose canary has not promoted its candidate (yet, or ever) changed nothing in production
        unpromoted = exists().where(col(Canary.action_run_id) == col(ActionRun.id),
                                    col(Canary.state) != CanaryState.promoted.value)
        condition = or_(condition, and_(
            col(ActionRun.verdict).is_(None), col(ActionRun.state) == ActionState.succeeded.value,
            col(ActionRun.finished_at).is_not(None), col(Decision.policy_sha256).in_(shas),
            col(Decision.follows_run_id).is_(None), ~unpromoted))
    if models is not None:
        condition = and_(condition, col(ActionRun.model_id).in_(list(models)))
    rows = session.exec(
        select(ActionRun, Decision).join(Decision, col(Decision.id) == col(ActionRun.decision_id))
        .where(condition).order_by(col(ActionRun.id))
    )
    return [(run, decision) for run, decision in rows]


def verification_blocks(session: Session, at: datetime) -> dict[tuple[int, str], ActionRun]:
    """Which policies may not act again on which models at ``at``: ``{(model_id, policy_name): run}``.

    A run whose verification ended ``fail`` or ``inconclusive`` blocks its
    decision's policy on its model from the verdict on, until a symptom of that
    model opens after the verdict (a new symptom), or a person lifts the block
    (:func:`lift_verification_block`). The run named is the latest blocking
    one. One query.
    """
    at = ensure_utc(at)
    newer_symptom = exists().where(col(Symptom.model_id) == col(ActionRun.model_id),
                                   col(Symptom.opened_at) > col(ActionRun.verdict_at), col(Symptom.opened_at) <= at)
    rows = session.exec(
        select(ActionRun, Decision.policy_name).join(Decision, col(Decision.id) == col(ActionRun.decision_id))
        .where(col(ActionRun.verdict).in_(list(BLOCKING_VERDICTS)), col(ActionRun.verdict_at) <= at,
               or_(col(ActionRun.block_lifted_at).is_(None), col(ActionRun.block_lifted_at) > at), ~newer_symptom)
        .order_by(col(ActionRun.verdict_at), col(ActionRun.id))
    )
    return {(run.model_id, policy_name): run for run, policy_name in rows}


def lift_verification_block(session: Session, model_id: int, policy_name: str, *, actor: str, reason: str,
                            at: datetime | None = None) -> list[ActionRun]:
    """A person lets ``policy_name`` act on the model again after a fail or inconclusive verdict; audited.

    Returns the runs whose block this lifted (none if the policy was not
    blocked on the model: nothing is recorded then).
    """
    at = ensure_utc(at or utcnow())
    runs = [run for run, _ in session.exec(
        select(ActionRun, Decision).join(Decision, col(Decision.id) == col(ActionRun.decision_id))
        .where(col(ActionRun.model_id) == model_id, col(Decision.policy_name) == policy_name,
               col(ActionRun.verdict).in_(list(BLOCKING_VERDICTS)), col(ActionRun.block_lifted_at).is_(None))
        .order_by(col(ActionRun.id)))]
    for run in runs:
        run.block_lifted_at = at
        run.block_lifted_by = actor
        session.add(run)
    if runs:
        session.flush()
        audit.record(session, actor=actor, kind="verification.block_lifted",
                     subject=f"policy {policy_name} on model_id={model_id}", time=at,
                     payload={"runs": [run.id for run in runs], "reason": reason})
    return runs


# --------------------------------------------------------------------------- history (mape policy simulate)


def tick_times(session: Session, *, since: datetime | None = None, until: datetime | None = None) -> list[datetime]:
    """The logical times of the recorded ticks in ``[since, until]``, oldest first."""
    query = select(Tick.at).distinct()
    if since is not None:
        query = query.where(Tick.at >= since)
    if until is not None:
        query = query.where(Tick.at <= until)
    return [ensure_utc(at) for at in session.exec(query.order_by(col(Tick.at)))]


def tick_span(session: Session) -> tuple[datetime | None, datetime | None, int]:
    """The first and the last recorded tick, and how many logical times there are (one query)."""
    first, last, count = session.exec(select(func.min(Tick.at), func.max(Tick.at),
                                             func.count(func.distinct(Tick.at)))).one()
    return (ensure_utc(first) if first is not None else None, ensure_utc(last) if last is not None else None,
            int(count or 0))


def metric_names(session: Session, model_id: int) -> list[str]:
    """The distinct metric names observed for a model, in order: a loose scan of the (model, metric, time) index.

    One small query per name, so its cost grows with the number of metrics, not of observations.
    """
    names: list[str] = []
    last: str | None = None
    while True:
        query = select(func.min(Observation.metric)).where(Observation.model_id == model_id)
        if last is not None:
            query = query.where(Observation.metric > last)
        name = session.exec(query).one()
        if name is None:
            return names
        names.append(name)
        last = name


def observation_rows(session: Session, model_ids: Sequence[int], metrics: Sequence[str], *, after: datetime,
                     until: datetime) -> list[Any]:
    """Observations of ``metrics`` of the models with ``after < time <= until``, as light rows.

    Each row is ``(model_id, metric, time, id, value, labels)``, by model,
    time and id. ``time`` and ``labels`` are returned as the
    driver gives them (SQLite: text; PostgreSQL: a datetime and a parsed
    value), so that a replay over millions of rows pays no per-row conversion
    it does not need. Callers read a long history in windows of time.
    """
    if not model_ids or not metrics:
        return []
    query = (
        select(Observation.model_id, Observation.metric, type_coerce(Observation.time, String),
               Observation.id, Observation.value, type_coerce(Observation.labels, String))
        .where(col(Observation.model_id).in_(list(model_ids)), col(Observation.metric).in_(list(metrics)),
               Observation.time > after, Observation.time <= until)
        .order_by(col(Observation.model_id), col(Observation.time), col(Observation.id))
    )
    return list(session.connection().execute(query).all())


def symptoms_between(session: Session, model_ids: Sequence[int], since: datetime, until: datetime) -> list[Symptom]:
    """Symptoms of the models that were open at some time in ``[since, until]``, by opening time."""
    if not model_ids:
        return []
    return list(session.exec(
        select(Symptom).where(col(Symptom.model_id).in_(list(model_ids)), Symptom.opened_at <= until,
                              or_(col(Symptom.closed_at).is_(None), col(Symptom.closed_at) > since))
        .order_by(col(Symptom.opened_at), col(Symptom.id))
    ))


def first_symptom_after(session: Session, model_id: int, after: datetime) -> datetime | None:
    """When the first symptom of a model opened after ``after``, if one did."""
    first = session.exec(select(func.min(Symptom.opened_at))
                         .where(Symptom.model_id == model_id, Symptom.opened_at > after)).one()
    return ensure_utc(first) if first is not None else None


def action_runs_between(session: Session, model_ids: Sequence[int], since: datetime,
                        until: datetime) -> list[ActionRun]:
    """Action runs of the models created before ``until`` and not finished before ``since``, oldest first."""
    if not model_ids:
        return []
    return list(session.exec(
        select(ActionRun).where(col(ActionRun.model_id).in_(list(model_ids)), ActionRun.created_at < until,
                                or_(col(ActionRun.finished_at).is_(None), col(ActionRun.finished_at) >= since))
        .order_by(col(ActionRun.id))
    ))


def blocking_runs(session: Session, until: datetime) -> list[tuple[ActionRun, str]]:
    """Runs whose verification ended ``fail`` or ``inconclusive`` by ``until``, with their policy's name."""
    rows = session.exec(
        select(ActionRun, Decision.policy_name).join(Decision, col(Decision.id) == col(ActionRun.decision_id))
        .where(col(ActionRun.verdict).in_(list(BLOCKING_VERDICTS)), col(ActionRun.verdict_at) <= until)
        .order_by(col(ActionRun.verdict_at), col(ActionRun.id))
    )
    return [(run, policy_name) for run, policy_name in rows]


def pause_history(session: Session) -> list[tuple[Pause, datetime | None]]:
    """Every pause with the time it was lifted (``None``: still in force), from the audit trail and the pause table.

    A lifted pause is known from its ``<scope>.resumed`` audit event, whose
    payload keeps the pause's author, time and reason.
    """
    history: list[tuple[Pause, datetime | None]] = []
    kinds = [f"{scope.value}.resumed" for scope in PauseScope]
    for event in session.exec(select(AuditEvent).where(col(AuditEvent.kind).in_(kinds)).order_by(col(AuditEvent.id))):
        scope, _, name = event.subject.partition(" ")
        payload = event.payload or {}
        paused_at = payload.get("paused_at")
        if not name or not isinstance(paused_at, str):
            continue
        history.append((Pause(scope=scope, name=name, paused_by=str(payload.get("paused_by", "")),
                              reason=str(payload.get("reason", "")),
                              paused_at=ensure_utc(datetime.fromisoformat(paused_at))), ensure_utc(event.time)))
    history.extend((pause, None) for pause in pauses(session))
    return history


def promotions(session: Session, model_ids: Sequence[int]) -> list[tuple[datetime, int, int]]:
    """Every promotion of a version of the models: ``(time, model_id, version)``, oldest first.

    The ``version.promoted`` audit events keep each one, including a version
    promoted again by a rollback, whose row keeps only its last ``promoted_at``.
    """
    wanted = set(model_ids)
    found: list[tuple[datetime, int, int]] = []
    events = session.exec(select(AuditEvent.time, AuditEvent.subject).where(AuditEvent.kind == "version.promoted"))
    for time, subject in events:
        match = _PROMOTED_SUBJECT.match(subject or "")
        if match and int(match.group(1)) in wanted:
            found.append((ensure_utc(time), int(match.group(1)), int(match.group(2))))
    return sorted(found)


def decision_rows(session: Session, *, since: datetime | None = None, until: datetime | None = None,
                  planner_ticks: bool | None = None, statuses: Sequence[str] | None = None,
                  created_after: datetime | None = None) -> list[Any]:
    """Decisions as light rows, without their evidence: what a replay compares and counts.

    ``planner_ticks=True``: only the planner's own decisions (a tick time, not
    a follow-up of verification) with ``since <= tick_at <= until``, by tick
    and id. ``False``: every other decision created by ``until`` (requested
    by a person, follow-ups of verification, and the planner's from before
    ``since``), by creation time and id. ``None``: every decision created in
    ``[since, until]``. ``created_after`` leaves out older ones.
    """
    query = select(Decision.id, Decision.created_at, Decision.tick_at, Decision.model_id, Decision.policy_name,
                   Decision.action, Decision.status, Decision.reason, Decision.decided_at, Decision.decided_by,
                   Decision.expires_at, Decision.follows_run_id)
    if statuses is not None:
        query = query.where(col(Decision.status).in_(list(statuses)))
    if created_after is not None:
        query = query.where(Decision.created_at > created_after)
    if planner_ticks is True:
        query = query.where(col(Decision.tick_at).is_not(None), col(Decision.follows_run_id).is_(None))
        if since is not None:
            query = query.where(col(Decision.tick_at) >= since)
        if until is not None:
            query = query.where(col(Decision.tick_at) <= until)
        query = query.order_by(col(Decision.tick_at), col(Decision.id))
    else:
        if planner_ticks is False:
            own = and_(col(Decision.tick_at).is_not(None), col(Decision.follows_run_id).is_(None))
            if since is not None:
                own = and_(own, col(Decision.tick_at) >= since)
            query = query.where(~own)
        elif since is not None:
            query = query.where(Decision.created_at >= since)
        if until is not None:
            query = query.where(Decision.created_at <= until)
        query = query.order_by(col(Decision.created_at), col(Decision.id))
    return list(session.connection().execute(query).all())


def tick_decision_rows(session: Session, since: datetime, until: datetime) -> list[Any]:
    """The planner's own decisions of the ticks in ``[since, until]``, lightest: what a replay compares with.

    Rows ``(id, tick_at, model_id, policy_name, action, status, reason)`` by
    tick and id; ``tick_at`` as the driver returns it (SQLite: text), so that
    millions of rows cost no per-row conversion.
    """
    query = (
        select(Decision.id, type_coerce(Decision.tick_at, String), Decision.model_id, Decision.policy_name,
               Decision.action, Decision.status, Decision.reason)
        .where(col(Decision.tick_at) >= since, col(Decision.tick_at) <= until, col(Decision.follows_run_id).is_(None))
        .order_by(col(Decision.tick_at), col(Decision.id))
    )
    return list(session.connection().execute(query).all())


def action_runs_by_id(session: Session, run_ids: Iterable[int]) -> dict[int, ActionRun]:
    ids = sorted(set(run_ids))
    if not ids:
        return {}
    return {run.id: run for run in session.exec(select(ActionRun).where(col(ActionRun.id).in_(ids)))
            if run.id is not None}


# --------------------------------------------------------------------------- the controller's own metrics


def action_run_counts(session: Session) -> dict[str, int]:
    """How many action runs are in each state now, in one grouped query; states without runs are left out."""
    query = select(ActionRun.state, func.count()).group_by(ActionRun.state)
    return {state: int(count) for state, count in session.exec(query)}


def newest_observation_by_root(session: Session, *, since: datetime, until: datetime) -> dict[tuple[str, str], datetime]:
    """The time of each model's newest observation of each context root, keyed by (model name, root).

    The root is a metric's first segment (``serving`` of ``serving.latency_p95_ms``).
    Only observations with ``since < time <= until`` count, which bounds the
    scan: a root with nothing newer than ``since`` is left out. One query,
    grouped by model and metric along the (model, metric, time) index.
    """
    newest = (
        select(Observation.model_id, Observation.metric, func.max(Observation.time).label("t"))
        .where(Observation.time > since, Observation.time <= until)
        .group_by(Observation.model_id, Observation.metric)
        .subquery()
    )
    query = select(ManagedModel.name, newest.c.metric, newest.c.t).join(newest, ManagedModel.id == newest.c.model_id)
    result: dict[tuple[str, str], datetime] = {}
    for name, metric, time in session.exec(query):
        key, time = (name, metric.split(".", 1)[0]), ensure_utc(time)
        if key not in result or time > result[key]:
            result[key] = time
    return result


def finished_ticks_after(session: Session, tick_id: int, *, limit: int = 1000) -> list[Tick]:
    """Ticks that finished, with an id above ``tick_id``, oldest first (what a metrics endpoint has not seen yet)."""
    return list(session.exec(
        select(Tick).where(Tick.id > tick_id, col(Tick.finished_at).is_not(None)).order_by(col(Tick.id)).limit(limit)
    ))


def newest_tick_id(session: Session) -> int:
    """The id of the newest tick row (0 when there is none)."""
    return session.exec(select(func.max(Tick.id))).one() or 0
