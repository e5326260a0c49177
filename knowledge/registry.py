"""The model registry: managed models and their versions, promotion and rollback.

Who calls it: the controller syncs managed models from configuration
(:func:`sync_models`); the execute stage registers candidates, promotes and
rolls back; people do the same through ``mape models``. Every stage change
writes an audit event in the same transaction.

Invariant: a model has at most one version in ``production``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Iterable

from sqlalchemy import func, or_
from sqlmodel import Session, col, select

from knowledge import audit
from knowledge.tables import ActionRun, ManagedModel, ModelVersion, Stage, Verdict
from mape._util.timeutil import utcnow


class RegistryError(LookupError):
    """A registry operation cannot be carried out (unknown model, no version to roll back to)."""


def get_model(session: Session, name: str) -> ManagedModel:
    model = session.exec(select(ManagedModel).where(ManagedModel.name == name)).first()
    if model is None:
        raise RegistryError(f"no managed model named {name!r} in the knowledge base")
    return model


def upsert_model(
    session: Session, *, name: str, owner: str = "", description: str = "", labels: dict[str, str] | None = None,
    training_entrypoint: str = "", serving_target: str | None = None, actor: str = "config",
) -> ManagedModel:
    """Create the managed model or update its descriptive fields; audit only real changes."""
    model = session.exec(select(ManagedModel).where(ManagedModel.name == name)).first()
    fields = {"owner": owner, "description": description, "labels": dict(labels or {}),
              "training_entrypoint": training_entrypoint, "serving_target": serving_target}
    if model is None:
        model = ManagedModel(name=name, **fields)
        session.add(model)
        session.flush()
        audit.record(session, actor=actor, kind="model.registered", subject=str(model), payload=fields)
        return model
    changed = {k: v for k, v in fields.items() if getattr(model, k) != v}
    if changed:
        for key, value in changed.items():
            setattr(model, key, value)
        model.updated_at = utcnow()
        session.add(model)
        session.flush()
        audit.record(session, actor=actor, kind="model.updated", subject=str(model), payload=changed)
    return model


def sync_models(session: Session, models: Iterable[Any], *, actor: str = "config") -> dict[str, ManagedModel]:
    """Upsert every configured model (objects with ModelConfig's fields); returns them by name."""
    result: dict[str, ManagedModel] = {}
    for cfg in models:
        result[cfg.name] = upsert_model(
            session, name=cfg.name, owner=cfg.owner, description=cfg.description, labels=dict(cfg.labels),
            training_entrypoint=cfg.training.entrypoint, actor=actor,
        )
    return result


def production_version(session: Session, model_id: int) -> ModelVersion | None:
    return session.exec(
        select(ModelVersion).where(ModelVersion.model_id == model_id, ModelVersion.stage == Stage.production.value)
    ).first()


def production_versions(session: Session, model_ids: Iterable[int]) -> dict[int, ModelVersion]:
    """The production version of each of ``model_ids`` that has one, in one query (the monitor asks every tick)."""
    ids = list(dict.fromkeys(model_ids))
    found: dict[int, ModelVersion] = {}
    if not ids:
        return found
    query = select(ModelVersion).where(col(ModelVersion.model_id).in_(ids),
                                       ModelVersion.stage == Stage.production.value)
    for version in session.exec(query.order_by(col(ModelVersion.id))):
        found.setdefault(version.model_id, version)
    return found


def versions(session: Session, model_id: int) -> list[ModelVersion]:
    return list(session.exec(
        select(ModelVersion).where(ModelVersion.model_id == model_id).order_by(col(ModelVersion.version))
    ))


def register_version(
    session: Session, *, model_id: int, artifact_uri: str, metrics: dict[str, Any] | None = None,
    training_window: tuple[datetime | None, datetime | None] = (None, None),
    created_by_action_run_id: int | None = None, actor: str = "engine",
) -> ModelVersion:
    """Add a new candidate version, numbered one above the highest so far."""
    highest = session.exec(select(func.max(ModelVersion.version)).where(ModelVersion.model_id == model_id)).one()
    parent = production_version(session, model_id)
    version = ModelVersion(
        model_id=model_id, version=(highest or 0) + 1, stage=Stage.candidate.value, artifact_uri=artifact_uri,
        metrics=dict(metrics or {}), training_window_start=training_window[0], training_window_end=training_window[1],
        parent_version_id=parent.id if parent else None, created_by_action_run_id=created_by_action_run_id,
    )
    session.add(version)
    session.flush()
    audit.record(session, actor=actor, kind="version.registered", subject=f"model_id={model_id} {version}",
                 payload={"artifact_uri": artifact_uri, "metrics": version.metrics})
    return version


def promote(session: Session, version: ModelVersion, *, actor: str, reason: str = "",
            evaluation: dict[str, Any] | None = None, at: datetime | None = None) -> ModelVersion:
    """Make ``version`` the production version; the previous one is archived."""
    at = at or utcnow()
    current = production_version(session, version.model_id)
    if current is not None and current.id != version.id:
        current.stage = Stage.archived.value
        current.retired_at = at
        session.add(current)
        session.flush()
    version.stage = Stage.production.value
    version.promoted_at = at
    version.retired_at = None
    if evaluation is not None:
        version.evaluation = evaluation
    session.add(version)
    session.flush()
    audit.record(session, actor=actor, kind="version.promoted", subject=f"model_id={version.model_id} {version}",
                 payload={"previous": current.version if current else None, "reason": reason,
                          "evaluation": version.evaluation}, time=at)
    return version


def start_canary(session: Session, version: ModelVersion, *, actor: str, reason: str,
                 evaluation: dict[str, Any] | None = None, at: datetime | None = None) -> ModelVersion:
    """Mark a candidate as serving a share of the replicas beside production (stage ``canary``).

    Production is untouched: the candidate becomes production only through
    :func:`promote` once its canary's last step held, or is rejected
    (:func:`reject`) when a step does not hold.
    """
    return _staged(session, version, Stage.canary, actor=actor, reason=reason, evaluation=evaluation, at=at)


def reject(session: Session, version: ModelVersion, *, actor: str, reason: str,
           evaluation: dict[str, Any] | None = None, at: datetime | None = None) -> ModelVersion:
    """Record a candidate as rejected, with the numbers that condemned it."""
    return _staged(session, version, Stage.rejected, actor=actor, reason=reason, evaluation=evaluation, at=at)


def _staged(session: Session, version: ModelVersion, stage: Stage, *, actor: str, reason: str,
            evaluation: dict[str, Any] | None, at: datetime | None) -> ModelVersion:
    """Put ``version`` in ``stage`` with its evaluation, audited as ``version.<stage>``."""
    version.stage = stage.value
    if evaluation is not None:
        version.evaluation = evaluation
    session.add(version)
    session.flush()
    audit.record(session, actor=actor, kind=f"version.{stage.value}", subject=f"model_id={version.model_id} {version}",
                 payload={"reason": reason, "evaluation": version.evaluation}, time=at)
    return version


def rollback_target(session: Session, model_id: int) -> ModelVersion | None:
    """The last good version: the most recently retired one that was once in production and not found bad.

    Found bad: rolled back from (its stage is then ``rejected``), or produced
    by an action run whose verification failed. Versions whose verification
    passed, or that predate verification (a bootstrap, a person's promotion),
    are good.
    """
    failed = select(ActionRun.id).where(ActionRun.verdict == Verdict.failed.value)
    return session.exec(
        select(ModelVersion)
        .where(ModelVersion.model_id == model_id, ModelVersion.stage == Stage.archived.value,
               col(ModelVersion.promoted_at).is_not(None))
        .where(or_(col(ModelVersion.created_by_action_run_id).is_(None),
                   col(ModelVersion.created_by_action_run_id).not_in(failed)))
        .order_by(col(ModelVersion.retired_at).desc(), col(ModelVersion.version).desc())
        .limit(1)
    ).first()


def rollback(session: Session, model_id: int, *, actor: str, reason: str, at: datetime | None = None) -> ModelVersion:
    """Return production to the last good version; the version rolled back from is marked rejected.

    Marking it rejected (not archived) keeps it from ever being chosen as a
    rollback target itself.
    """
    target = rollback_target(session, model_id)
    if target is None:
        raise RegistryError(f"model_id={model_id} has no earlier production version to roll back to")
    current = production_version(session, model_id)
    promote(session, target, actor=actor, reason=f"rollback: {reason}", at=at)
    if current is not None:
        current.stage = Stage.rejected.value
        session.add(current)
        session.flush()
        audit.record(session, actor=actor, kind="version.rolled_back", subject=f"model_id={model_id} {current}",
                     payload={"to_version": target.version, "reason": reason}, time=at)
    return target
