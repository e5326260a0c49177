"""Production's replicas serve the production version: moved with every change of production, and kept so.

Who calls it: the effectors that change production without a canary (the
``retrain`` effector's direct promotion, ``rollback``) call :func:`move` in
the attempt's transaction, so the change takes effect in the same step; the
controller calls :meth:`ProductionFollower.follow` once per tick, which rolls
a model's production replicas when they serve another version than the
knowledge base's production: after a promotion or rollback a person made
(``mape models promote|rollback``, which only write the registry), or after a
roll whose transaction did not commit (the replicas were moved, the registry
was not: the next tick moves them back).

Level-triggered, as a Kubernetes controller is: the follower compares what
is served with what should be, whatever changed it. A model is compared once
after the controller starts and then whenever its production version changes
(the versions it has seen are kept per controller), so a Kubernetes
Deployment is read once per change, not once per tick. Models with an action
in flight are left alone: their effector, perhaps in another process, may be
moving production right now, and its roll is of a version not yet committed.

What "roll" means per target is :func:`mape.execute.placement.roll`:
a local replica set starts the new version's replicas before it stops the
old ones; a Kubernetes Deployment gets the version on its pod template with
``serving.kubernetes.promote: patch`` (with ``pipeline`` the delivery
pipeline does that, and nothing is sent).
"""

from __future__ import annotations

import logging
from collections.abc import Collection
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy.engine import Engine

from knowledge import audit, queries, registry
from knowledge.database import session_scope
from knowledge.tables import ModelVersion
from mape.config import ModelConfig
from mape.errors import CanaryNotSupportedError, ServingError
from mape.execute.placement import roll
from mape.execute.context import ActionContext
from mape.execute.serving import action_error, version_artifact
from mape.serving.factory import target_for
from mape.serving.target import ServingTarget

__all__ = ["FollowReport", "ProductionFollower", "describe", "move"]

log = logging.getLogger(__name__)


def move(ctx: ActionContext, version: ModelVersion) -> dict[str, Any] | None:
    """Roll the model's production replicas to ``version``, which the effector just made production.

    ``version`` is named directly, not read back from the registry: the
    promotion is not committed yet, and a fresh session would still see the
    old production. Returns how production's replicas stand (:func:`describe`),
    or None when the model has no serving section.

    Raises
    ------
    TransientActionError, PermanentActionError
        When the serving target fails: the attempt's transaction, and with it
        the change of production, is rolled back, and the run is retried (or
        fails), as for ``rescale``.
    """
    target = target_for(ctx.config, ctx.serving_dir, version_artifact(version))
    if target is None:
        return None
    try:
        rolled = roll(target)
    except ServingError as exc:
        raise action_error(exc) from None
    return describe(ctx.config, target, version, rolled)


def describe(cfg: ModelConfig, target: ServingTarget, version: ModelVersion, rolled: int) -> dict[str, Any]:
    """How production's replicas stand after a roll to ``version``: recorded with the promotion or rollback.

    ``detail`` is one clause for people; ``pod_template`` says who points a
    Kubernetes Deployment at the version (``patch``: mape did; ``pipeline``:
    the delivery pipeline will); ``health`` is the target's reading after the
    roll (None when it cannot be read, ``health_error`` then says why).
    """
    k8s = cfg.serving.kubernetes if cfg.serving is not None else None
    found: dict[str, Any] = {"target": str(target), "replaced": rolled,
                             "pod_template": k8s.promote if k8s is not None else None}
    try:
        health = target.health()
    except (ServingError, CanaryNotSupportedError) as exc:
        found.update(health=None, health_error=str(exc))
        reading = f"its health could not be read: {exc}"
    else:
        found.update(health=str(health), health_error=None)
        reading = str(health)
    if k8s is not None and k8s.promote == "pipeline":
        found["detail"] = (f"the pod template of {target} is the delivery pipeline's (serving.kubernetes.promote: "
                           f"pipeline): its pods serve version {version.version} once the pipeline rolls it "
                           f"out ({reading})")
    elif k8s is not None:
        how = f"{rolled} pod(s) replaced" if rolled else "its pod template named it already"
        found["detail"] = f"{target} serves version {version.version} ({how}; {reading})"
    else:
        how = f"{rolled} replica(s) replaced" if rolled else "no replica to replace"
        found["detail"] = f"production's replicas serve version {version.version} ({how}; {reading})"
    return found


@dataclass
class FollowReport:
    """One tick's pass: the models whose replicas were moved to production, and the targets that failed."""

    rolled: list[dict[str, Any]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"production_rolls": list(self.rolled), "errors": list(self.errors)}


class ProductionFollower:
    """Keeps every served model's production replicas on the knowledge base's production version.

    Parameters
    ----------
    engine : Engine
        The knowledge base.
    models : dict of str to ModelConfig
        The managed models by name; those without a ``serving`` section are skipped.
    serving_dir : Path
        Where local replica sets keep their state.
    actor : str
        Who the audit events name (the controller).
    """

    def __init__(self, engine: Engine, *, models: dict[str, ModelConfig], serving_dir: Path, actor: str) -> None:
        self.engine = engine
        self.models = models
        self.serving_dir = serving_dir
        self.actor = actor
        self._followed: dict[str, int] = {}  # model name -> production version id its replicas were found serving

    def follow(self, at: datetime, *, models: Collection[int] | None = None) -> FollowReport:
        """Roll the replicas of each served model whose production changed since this controller last looked.

        With ``models``, only those models (by id).
        """
        report = FollowReport()
        served = {name: cfg for name, cfg in self.models.items() if cfg.serving is not None}
        if not served:
            return report
        with session_scope(self.engine) as session:
            stored = queries.models_by_name(session)
            busy = {run.model_id for run in queries.in_flight_actions(session)}
            due: list[tuple[str, int, ModelVersion]] = []
            for name in sorted(served):
                model = stored.get(name)
                if model is None or model.id is None or model.id in busy:
                    continue
                if models is not None and model.id not in models:
                    continue
                production = registry.production_version(session, model.id)
                if production is None or production.id is None or self._followed.get(name) == production.id:
                    continue
                session.expunge(production)
                due.append((name, model.id, production))
        for name, model_id, production in due:
            self._follow_one(report, served[name], model_id, production, at)
        return report

    def _follow_one(self, report: FollowReport, cfg: ModelConfig, model_id: int, production: ModelVersion,
                    at: datetime) -> None:
        target = target_for(cfg, self.serving_dir, version_artifact(production))
        assert target is not None  # only models with a serving section are followed
        try:
            rolled = roll(target)
        except ServingError as exc:  # tried again next tick; production stays what the registry says
            report.errors.append(f"model {cfg.name}: its replicas could not be moved to version "
                                 f"{production.version}: {exc}")
            log.warning("Model %s: production's replicas could not be moved to version %d: %s", cfg.name,
                        production.version, exc)
            return
        assert production.id is not None
        self._followed[cfg.name] = production.id
        if not rolled:
            return
        found = describe(cfg, target, production, rolled)
        with session_scope(self.engine) as session:
            audit.record(session, actor=self.actor, kind="serving.followed_production",
                         subject=f"model_id={model_id} {production}", time=at,
                         payload={"version": production.version, **found})
        report.rolled.append({"model": cfg.name, "version": production.version, "replaced": rolled,
                              "detail": found["detail"]})
        log.info("Model %s: production's replicas moved to version %d, which the registry names (%s)", cfg.name,
                 production.version, found["detail"])
