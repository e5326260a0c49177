"""Reads of the ``canary`` table that more than one stage needs.

Who calls it: the Plan stage's verification judges the steps of running
canaries (:func:`running_canaries`) and starts a run's own verification only
once its canary promoted the candidate (:func:`canaries_by_run`); the planner
counts a model with a running canary as busy (:func:`running_canaries`); the
Monitor scores the predictions of each running canary's version
(:func:`canary_versions`); the Execute stage moves canaries on
(:func:`running_canaries`); ``mape models show`` and the dashboard read a
run's canary (:func:`canary_of_run`); the Execute stage's withdrawal of
canary replicas no running canary owns reads each model's latest run that
asked for a canary (:func:`latest_canary_runs`); ``mape policy simulate``
keeps a model busy while a recorded canary of it ran (:func:`canaries_between`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime

from sqlalchemy import String, cast, func, or_
from sqlmodel import Session, col, select

from knowledge.tables import ActionRun, Canary, CanaryState, Decision, ManagedModel, ModelVersion

__all__ = ["canaries_between", "canaries_by_run", "canary_of_run", "canary_versions", "latest_canary_runs",
           "running_canaries"]


def running_canaries(session: Session, model_ids: Sequence[int] | None = None
                     ) -> list[tuple[Canary, ActionRun, Decision]]:
    """Every running canary with its action run and decision, oldest first (of ``model_ids`` only, when given)."""
    query = (select(Canary, ActionRun, Decision)
             .join(ActionRun, col(ActionRun.id) == col(Canary.action_run_id))
             .join(Decision, col(Decision.id) == col(ActionRun.decision_id))
             .where(Canary.state == CanaryState.running.value))
    if model_ids is not None:
        query = query.where(col(Canary.model_id).in_(list(model_ids)))
    return [(canary, run, decision) for canary, run, decision in session.exec(query.order_by(col(Canary.id)))]


def canaries_by_run(session: Session, run_ids: Iterable[int]) -> dict[int, Canary]:
    """The canary of each of ``run_ids`` that has one, by run id."""
    ids = sorted(set(run_ids))
    if not ids:
        return {}
    return {c.action_run_id: c for c in session.exec(select(Canary).where(col(Canary.action_run_id).in_(ids)))}


def canary_of_run(session: Session, run_id: int) -> Canary | None:
    """The canary an action run started, if any."""
    return session.exec(select(Canary).where(Canary.action_run_id == run_id)).first()


def canary_versions(session: Session, model_ids: Sequence[int]) -> dict[int, tuple[Canary, ModelVersion]]:
    """By model id, the running canary and its candidate version, for the models of ``model_ids`` that have one."""
    if not model_ids:
        return {}
    rows = session.exec(
        select(Canary, ModelVersion).join(ModelVersion, col(ModelVersion.id) == col(Canary.version_id))
        .where(Canary.state == CanaryState.running.value, col(Canary.model_id).in_(list(model_ids)))
        .order_by(col(Canary.id))
    )
    return {canary.model_id: (canary, version) for canary, version in rows}


def canaries_between(session: Session, model_ids: Sequence[int], first: datetime, last: datetime
                     ) -> list[tuple[Canary, ActionRun]]:
    """The canaries of ``model_ids`` that ran at some time in ``[first, last]``, with their runs, oldest first."""
    if not model_ids:
        return []
    query = (select(Canary, ActionRun).join(ActionRun, col(ActionRun.id) == col(Canary.action_run_id))
             .where(col(Canary.model_id).in_(list(model_ids)), col(Canary.created_at) <= last,
                    or_(col(Canary.finished_at).is_(None), col(Canary.finished_at) >= first))
             .order_by(col(Canary.id)))
    return [(canary, run) for canary, run in session.exec(query)]


def latest_canary_runs(session: Session, model_ids: Sequence[int] | None = None
                       ) -> list[tuple[ActionRun, ManagedModel, Canary | None]]:
    """Of each model (of ``model_ids`` only, when given), its newest action run that asked for a canary.

    With the model and the run's canary, if it started one. A run asked for a
    canary when its parameters hold a ``canary`` (the ``retrain`` action's);
    the parameters' JSON text is searched first, then the key checked.
    """
    asked = cast(col(ActionRun.params), String).like('%"canary"%')
    newest = select(ActionRun.model_id, func.max(ActionRun.id).label("id")).where(asked)
    if model_ids is not None:
        newest = newest.where(col(ActionRun.model_id).in_(list(model_ids)))
    ids = [row[1] for row in session.exec(newest.group_by(col(ActionRun.model_id)))]
    if not ids:
        return []
    rows = session.exec(select(ActionRun, ManagedModel).join(ManagedModel, col(ManagedModel.id) == col(ActionRun.model_id))
                        .where(col(ActionRun.id).in_(ids)).order_by(col(ActionRun.id)))
    found = [(run, model) for run, model in rows if (run.params or {}).get("canary") is not None]
    canaries = canaries_by_run(session, [run.id for run, _ in found if run.id is not None])
    return [(run, model, canaries.get(run.id)) for run, model in found if run.id is not None]
