"""Reads and writes that more than one stage (or the dashboard) needs.

Who calls it: the monitor writes observations; analyze reads metric series and
opens or closes symptoms; the planner reads the latest signals, open symptoms,
recent decisions and in-flight actions; the executor and the dashboard read
decisions and action runs. Aggregation happens in SQL, never by loading whole
tables.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import and_, func
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from knowledge import audit
from knowledge.tables import (
    ActionRun,
    ActionState,
    Decision,
    DecisionStatus,
    ManagedModel,
    Observation,
    PolicyVersion,
    Symptom,
    SymptomStatus,
    Tick,
)
from mape._util.timeutil import ensure_utc, utcnow

IN_FLIGHT_STATES = (ActionState.pending.value, ActionState.scheduled.value, ActionState.running.value)
ACTED_STATUSES = (DecisionStatus.proposed.value, DecisionStatus.approved.value, DecisionStatus.awaiting_approval.value)


# --------------------------------------------------------------------------- ticks


def begin_tick(session: Session, at: datetime, *, controller_id: str, flow_run_id: str | None = None) -> tuple[Tick, bool]:
    """Return the tick row for logical time ``at`` and whether it is new (False: a repeated tick)."""
    existing = session.exec(select(Tick).where(Tick.at == at)).first()
    if existing is not None:
        return existing, False
    tick = Tick(at=at, controller_id=controller_id, flow_run_id=flow_run_id)
    try:
        with session.begin_nested():
            session.add(tick)
            session.flush()
    except IntegrityError:
        return session.exec(select(Tick).where(Tick.at == at)).one(), False
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


def add_observations(session: Session, observations: Iterable[Observation]) -> int:
    rows = list(observations)
    session.add_all(rows)
    session.flush()
    return len(rows)


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
    """Seconds from the last acting decision of each action type on a model to ``at`` (one aggregate query)."""
    rows = session.exec(
        select(Decision.action, func.max(Decision.created_at))
        .where(Decision.model_id == model_id, col(Decision.status).in_(list(ACTED_STATUSES)),
               Decision.created_at <= at)
        .group_by(Decision.action)
    )
    return {action: (at - ensure_utc(last)).total_seconds() for action, last in rows if last is not None}


def in_flight_actions(session: Session, model_id: int | None = None) -> list[ActionRun]:
    query = select(ActionRun).where(col(ActionRun.state).in_(IN_FLIGHT_STATES))
    if model_id is not None:
        query = query.where(ActionRun.model_id == model_id)
    return list(session.exec(query.order_by(col(ActionRun.id))))


def decisions_to_dispatch(session: Session) -> list[Decision]:
    """Decisions that should become action runs and have none yet (proposed, or approved by a person)."""
    query = (
        select(Decision)
        .outerjoin(ActionRun, col(ActionRun.decision_id) == Decision.id)
        .where(col(Decision.status).in_([DecisionStatus.proposed.value, DecisionStatus.approved.value]),
               col(ActionRun.id).is_(None))
        .order_by(col(Decision.id))
    )
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
