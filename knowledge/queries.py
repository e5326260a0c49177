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

import hashlib
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import and_, func, or_, update
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from knowledge import audit
from knowledge.tables import (
    ActionRun,
    ActionState,
    Decision,
    DecisionStatus,
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


# --------------------------------------------------------------------------- fleet-wide reads (one query each)


def latest_summary_metrics_fleet(
    session: Session, model_ids: Sequence[int], *, until: datetime, since: datetime | None = None,
    prefixes: Sequence[str] = ("drift.", "performance."),
) -> dict[int, dict[str, Observation]]:
    """The newest summary observation (empty labels) of each metric of each model, in one query.

    ``since`` bounds the scan to recent rows (the staleness bound): with the
    (model, metric, time) index, a planning pass then reads only the last ticks.
    """
    if not model_ids:
        return {}
    where = [col(Observation.model_id).in_(list(model_ids)), Observation.time <= until]
    if since is not None:
        where.append(Observation.time >= since)
    prefix_match = [col(Observation.metric).startswith(p) for p in prefixes]
    newest = (
        select(Observation.model_id, Observation.metric, func.max(Observation.time).label("t"))
        .where(*where, or_(*prefix_match), ~col(Observation.metric).startswith("drift.feature."))
        .group_by(Observation.model_id, Observation.metric)
        .subquery()
    )
    query = select(Observation).join(newest, and_(
        Observation.model_id == newest.c.model_id, Observation.metric == newest.c.metric,
        Observation.time == newest.c.t))
    result: dict[int, dict[str, Observation]] = {}
    for obs in session.exec(query.order_by(col(Observation.id))):
        if not obs.labels:
            result.setdefault(obs.model_id, {})[obs.metric] = obs
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


def last_action_times_fleet(session: Session, model_ids: Sequence[int], at: datetime) -> dict[int, dict[str, float]]:
    """Like :func:`last_action_times`, for many models in one grouped query."""
    result: dict[int, dict[str, float]] = {}
    if not model_ids:
        return result
    rows = session.exec(
        select(Decision.model_id, Decision.action, func.max(Decision.created_at))
        .where(col(Decision.model_id).in_(list(model_ids)), col(Decision.status).in_(list(ACTED_STATUSES)),
               Decision.created_at <= at)
        .group_by(Decision.model_id, Decision.action)
    )
    for model_id, action, last in rows:
        if last is not None:
            result.setdefault(model_id, {})[action] = (at - ensure_utc(last)).total_seconds()
    return result


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
