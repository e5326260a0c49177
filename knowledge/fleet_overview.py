"""One row per managed model for the dashboard's Fleet page, aggregated in SQL.

Who calls it: the Fleet page (:mod:`dashboard.fleet`), once per drawing.
:func:`fleet_overview` answers "how is every model doing" with seven
statements for the whole fleet, none per model, each bounded by an index or
a small table:

- the models (name, owner, labels);
- the production versions (``model_version``, a row per version);
- open symptoms counted per model and severity (``GROUP BY``);
- the newest action run of each model (``max(id)`` per model along
  ``ix_action_run_model_id``) with its decision's policy;
- decisions awaiting approval counted per model
  (``ix_decision_status_expires_at``);
- the newest time of each freshness metric per model: a correlated
  ``max(time)`` per model and metric, one seek each along
  ``ix_observation_model_metric_time`` (a ``GROUP BY model_id`` over the
  observations would read every row of the index);
- the models' pauses.

Measured on this 2-core machine with 50 models, 1 million observations and
10,000 decisions: 6 ms on SQLite, 36 ms on PostgreSQL for the whole overview
(the freshness statement 1 ms and 6 ms); a ``GROUP BY model_id``
``max(time)`` over the observations instead took 135 ms and 206 ms.

Staleness itself is the caller's to judge (the Analyze stage's rule, with
the dashboard's clock): this module only says when each signal last arrived.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import func
from sqlmodel import Session, col, select

from knowledge.tables import (
    ActionRun,
    Decision,
    DecisionStatus,
    ManagedModel,
    ModelVersion,
    Observation,
    Pause,
    PauseScope,
    Stage,
    Symptom,
    SymptomStatus,
)
from mape._util.timeutil import ensure_utc


@dataclass(frozen=True)
class LastAction:
    """A model's newest action run: what ran, for which policy, where it stands, and its verification verdict."""

    run_id: int
    action: str
    policy: str
    state: str
    finished_at: datetime | None
    verdict: str | None  # null: not verified (or not yet finished); see knowledge.tables.Verdict

    def __str__(self) -> str:
        verdict = f", verdict {self.verdict}" if self.verdict else ""
        return f"{self.action} ({self.state}{verdict})"


@dataclass(frozen=True)
class PauseInfo:
    """Who paused a model, when and why."""

    paused_by: str
    reason: str
    paused_at: datetime


@dataclass(frozen=True)
class FleetRow:
    """What the Fleet page shows of one model."""

    model_id: int
    name: str
    owner: str
    labels: dict[str, str]
    production_version: int | None = None
    promoted_at: datetime | None = None
    symptoms: dict[str, int] = field(default_factory=dict)  # open symptoms by severity; none open: empty
    last_action: LastAction | None = None
    pending_approvals: int = 0
    signals: dict[str, datetime] = field(default_factory=dict)  # freshness metric -> newest observation time
    pause: PauseInfo | None = None

    @property
    def newest_signal(self) -> datetime | None:
        """The newest of the freshness metrics' observations (None: no watched sensor ever wrote)."""
        return max(self.signals.values(), default=None)


def fleet_overview(session: Session, *, freshness_metrics: Sequence[str] = ()) -> list[FleetRow]:
    """Every managed model with its production version, health, last action, approvals, freshness and pause.

    Parameters
    ----------
    session : Session
        An open session on the knowledge base.
    freshness_metrics : sequence of str
        Metrics whose newest observation tells when a sensor last reported
        for a model (:data:`mape.analyze.stage.FRESHNESS_METRICS`); each costs
        one index seek per model.

    Returns
    -------
    list of FleetRow
        By model name; empty for an empty knowledge base.
    """
    if isinstance(freshness_metrics, str):
        raise ValueError("The 'freshness_metrics' parameter of fleet_overview must be a sequence of metric names. "
                         f"Got {freshness_metrics!r} instead.")
    models = list(session.exec(select(ManagedModel.id, ManagedModel.name, ManagedModel.owner, ManagedModel.labels)
                               .order_by(col(ManagedModel.name))))
    if not models:
        return []
    production = _production_versions(session)
    symptoms = _open_symptom_counts(session)
    actions = _last_actions(session)
    approvals = _pending_approvals(session)
    signals = _newest_signals(session, list(freshness_metrics))
    pauses = _model_pauses(session)
    rows = []
    for model_id, name, owner, labels in models:
        version, promoted_at = production.get(model_id, (None, None))
        rows.append(FleetRow(model_id=model_id, name=name, owner=owner or "", labels=dict(labels or {}),
                             production_version=version, promoted_at=promoted_at,
                             symptoms=symptoms.get(model_id, {}), last_action=actions.get(model_id),
                             pending_approvals=approvals.get(model_id, 0), signals=signals.get(model_id, {}),
                             pause=pauses.get(name)))
    return rows


def _production_versions(session: Session) -> dict[int, tuple[int, datetime | None]]:
    query = (select(ModelVersion.model_id, ModelVersion.version, ModelVersion.promoted_at)
             .where(ModelVersion.stage == Stage.production.value).order_by(col(ModelVersion.version)))
    return {model_id: (version, _utc(promoted_at)) for model_id, version, promoted_at in session.exec(query)}


def _open_symptom_counts(session: Session) -> dict[int, dict[str, int]]:
    query = (select(Symptom.model_id, Symptom.severity, func.count())
             .where(Symptom.status == SymptomStatus.open.value).group_by(Symptom.model_id, Symptom.severity))
    result: dict[int, dict[str, int]] = {}
    for model_id, severity, count in session.exec(query):
        result.setdefault(model_id, {})[severity] = int(count)
    return result


def _last_actions(session: Session) -> dict[int, LastAction]:
    newest = select(func.max(ActionRun.id).label("id")).group_by(ActionRun.model_id).subquery()
    query = (select(ActionRun.model_id, ActionRun.id, ActionRun.action, Decision.policy_name, ActionRun.state,
                    ActionRun.finished_at, ActionRun.verdict)
             .join(newest, col(ActionRun.id) == newest.c.id)
             .join(Decision, col(Decision.id) == ActionRun.decision_id))
    return {model_id: LastAction(run_id=run_id, action=action, policy=policy, state=state,
                                 finished_at=_utc(finished_at), verdict=verdict)
            for model_id, run_id, action, policy, state, finished_at, verdict in session.exec(query)}


def _pending_approvals(session: Session) -> dict[int, int]:
    query = (select(Decision.model_id, func.count())
             .where(Decision.status == DecisionStatus.awaiting_approval.value).group_by(Decision.model_id))
    return {model_id: int(count) for model_id, count in session.exec(query)}


def _newest_signals(session: Session, metrics: list[str]) -> dict[int, dict[str, datetime]]:
    if not metrics:
        return {}
    newest: list[Any] = [
        select(func.max(Observation.time)).where(Observation.model_id == ManagedModel.id, Observation.metric == metric)
        .scalar_subquery().label(f"s{i}")
        for i, metric in enumerate(metrics)
    ]
    result: dict[int, dict[str, datetime]] = {}
    for model_id, *times in session.exec(select(ManagedModel.id, *newest)):
        seen = {metric: ensure_utc(time) for metric, time in zip(metrics, times) if time is not None}
        if seen:
            result[model_id] = seen
    return result


def _model_pauses(session: Session) -> dict[str, PauseInfo]:
    query = select(Pause.name, Pause.paused_by, Pause.reason, Pause.paused_at).where(
        Pause.scope == PauseScope.model.value)
    return {name: PauseInfo(paused_by=by, reason=reason, paused_at=ensure_utc(at))
            for name, by, reason, at in session.exec(query)}


def _utc(value: datetime | None) -> datetime | None:
    return None if value is None else ensure_utc(value)
