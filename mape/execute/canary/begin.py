"""Start a canary: a candidate that passed the gate serves the first share of the replicas beside production.

Who calls it: the ``retrain`` effector (:mod:`mape.execute.actions.retrain`),
in the attempt's transaction, once its candidate passed the
champion/challenger gate and its parameters ask for a ``canary``.

What it does: it counts production's replicas, starts
:func:`~mape.serving.canary.canary_replicas` replicas of the candidate beside
them (the local target's ``canary`` replica set, or the ``-canary``
Deployment), marks the candidate's stage ``canary`` and writes the
:class:`~knowledge.tables.Canary` row, the canary's progress record, with the
``canary.started`` audit event. Production is untouched. The replica count is
absolute, so a retried attempt that already started them starts nothing more
(and replicas of another version, left by an earlier attempt's candidate, are
replaced).

A canary needs a production version with replicas serving it, a serving
section, and a version column in the inference log (how else could the
canary's predictions be told from production's, and its steps be verified?).
Without one of them :class:`~mape.errors.CanaryNotSupportedError` says which;
the effector then promotes directly and records why.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

from knowledge import audit, registry
from knowledge.tables import Canary, CanaryState, ModelVersion
from mape.errors import CanaryNotSupportedError, ServingError
from mape.execute.canary.params import CanaryParams
from mape.execute.placement import place
from mape.execute.context import ActionContext
from mape.execute.serving import action_error, production_artifact, version_artifact
from mape.serving.canary import canary_replicas, served_share
from mape.serving.factory import canary_target_for, target_for

__all__ = ["begin", "summary"]

log = logging.getLogger(__name__)


def begin(ctx: ActionContext, params: CanaryParams, candidate: ModelVersion, production: ModelVersion | None, *,
          reason: str, evaluation: dict[str, Any]) -> Canary:
    """Start the candidate's canary at the first step; returns its row (flushed, committed with the run).

    Raises
    ------
    CanaryNotSupportedError
        When no canary is possible for the model here (the promotion is then direct).
    TransientActionError, PermanentActionError
        When the serving target fails (retried, or failing the run, as for ``rescale``).
    """
    cfg = ctx.config
    if production is None:
        raise CanaryNotSupportedError(f"model {cfg.name} has no production version yet, so there is no traffic to "
                                      f"share with a canary")
    if cfg.version_column is None:
        raise CanaryNotSupportedError(f"the inference log of model {cfg.name} has no version_column, so the "
                                      f"canary's predictions cannot be told from production's and its steps "
                                      f"cannot be verified")
    assert ctx.model.id is not None
    production_replicas = production_artifact(ctx.session.get_bind(), ctx.model.id, cfg.name)  # type: ignore[arg-type]
    stable_target = target_for(cfg, ctx.serving_dir, production_replicas)
    canary_target = canary_target_for(cfg, ctx.serving_dir, version_artifact(candidate))
    assert stable_target is not None  # canary_target_for raised without a serving section
    first = params.plan()[0]
    try:
        stable = stable_target.replicas()
        if stable < 1:
            raise CanaryNotSupportedError(f"{stable_target} runs no replica, so no share of its traffic can go to "
                                          f"a canary")
        replicas = place(canary_target, canary_replicas(stable, first.share))
    except ServingError as exc:
        raise action_error(exc) from None
    at = ctx.at
    canary = Canary(action_run_id=ctx.run.id, model_id=ctx.model.id, version_id=candidate.id,
                    champion_version_id=production.id, target=cfg.serving.target if cfg.serving else "",
                    state=CanaryState.running.value, steps=[step.as_dict() for step in params.plan()], step=0,
                    share=first.share, replicas=replicas, stable_replicas=stable, step_started_at=at,
                    step_until=at + first.bake, created_at=at, updated_at=at)
    ctx.session.add(canary)
    ctx.session.flush()
    registry.start_canary(ctx.session, candidate, actor=ctx.actor, at=at,
                          reason=f"decision {ctx.decision.id}: {reason}; canary at {first.share:.0%} of the replicas",
                          evaluation={**evaluation, "canary": {"id": canary.id, "steps": canary.steps}})
    audit.record(ctx.session, actor=ctx.actor, kind="canary.started", subject=f"{canary} of {ctx.model}", time=at,
                 payload={**summary(canary), "version": candidate.version, "champion_version": production.version,
                          "decision": ctx.decision.id, "run": ctx.run.id, "target": str(canary_target)})
    log.info("Model %s version %d serves %d of %d replicas (%.0f%%) as a canary until %s", cfg.name,
             candidate.version, replicas, stable + replicas, 100 * served_share(stable, replicas),
             canary.step_until.isoformat())
    return canary


def summary(canary: Canary) -> dict[str, Any]:
    """The canary as a run's result and audit events show it."""
    return {"canary_id": canary.id, "state": canary.state, "step": canary.step + 1, "steps": len(canary.steps),
            "share": canary.share, "replicas": canary.replicas, "stable_replicas": canary.stable_replicas,
            "served_share": round(served_share(canary.stable_replicas, canary.replicas), 4),
            "step_until": _iso(canary.step_until)}


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None
