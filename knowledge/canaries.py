"""Reads of the ``canary`` table that more than one stage needs.

Who calls it: the Plan stage's verification judges the steps of running
canaries (:func:`running_canaries`) and starts a run's own verification only
once its canary promoted the candidate (:func:`canaries_by_run`); the planner
counts a model with a running canary as busy (:func:`running_canaries`); the
Monitor scores the predictions of each running canary's version
(:func:`canary_versions`); the Execute stage moves canaries on
(:func:`running_canaries`); ``mape models show`` and the dashboard read a
run's canary (:func:`canary_of_run`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from sqlmodel import Session, col, select

from knowledge.tables import ActionRun, Canary, CanaryState, Decision, ModelVersion

__all__ = ["canaries_by_run", "canary_of_run", "canary_versions", "running_canaries"]


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
