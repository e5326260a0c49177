"""``rescale``: change how many replicas serve a model, within its bounds.

Who calls it: the executor, for decisions whose action type is ``rescale``.
The policy asks for an absolute count (``replicas: 3``) or a change
(``by: 1``, ``by: -1``); :func:`mape.serving.target.plan_replicas`
applies the model's ``serving.replicas`` bounds: the count stays within
``[min_replicas, max_replicas]``, changes by at most ``max_step``, and does
not go down within ``scale_down_stabilization`` of the last scale-up (the
last successful ``rescale`` run that added replicas, read from the knowledge
base, so the window survives restarts). A request the bounds reduce to "no
change" succeeds without touching the target and says why in its result.

Idempotent: the target is asked for an absolute count, so a retried run that
already scaled changes nothing. The result records ``from``, ``to``,
``requested``, ``limited_by`` and the target's health afterwards (``ready``,
``endpoints``, and ``health``, its sentence; a health check that fails after
the scaling leaves ``ready`` null and does not fail the run). A
:class:`~mape.errors.ServingError` that is ``transient`` (a timeout, an API
server answering 5xx) is retried after a minute; any other (a refused token,
an unknown Deployment) fails the run at once.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator
from sqlmodel import Session, col, select

from knowledge.tables import ActionRun, ActionState
from mape.errors import PermanentActionError, ServingError
from mape.execute.context import ActionContext
from mape.execute.registry import action
from mape.execute.serving import action_error, production_artifact
from mape.serving.factory import target_for
from mape.serving.target import ServingTarget, plan_replicas


class RescaleParams(BaseModel):
    """Parameters of ``rescale`` in a policy's ``action.params``: exactly one of ``replicas`` and ``by``."""

    model_config = ConfigDict(extra="forbid")

    replicas: int | None = Field(None, ge=0, description="Scale to this many replicas.")
    by: int | None = Field(None, description="Add (positive) or remove (negative) this many replicas.")

    @model_validator(mode="after")
    def _one_of(self) -> "RescaleParams":
        if (self.replicas is None) == (self.by is None):
            raise ValueError("give exactly one of 'replicas' (a count) and 'by' (a change, e.g. 1 or -1)")
        if self.by == 0:
            raise ValueError("'by' must not be 0: a rescale that changes nothing is not an action")
        return self


def serving_target(ctx: ActionContext) -> ServingTarget:
    """The serving target of the action's model, whose new replicas serve the production version.

    Raises
    ------
    PermanentActionError
        When the model has no ``serving`` section: it cannot be rescaled.
    """
    cfg = ctx.config
    assert ctx.model.id is not None
    production = production_artifact(ctx.session.get_bind(), ctx.model.id, cfg.name)  # type: ignore[arg-type]
    target = target_for(cfg, ctx.serving_dir, production)
    if target is None:
        raise PermanentActionError(f"model {cfg.name} has no serving configuration, so it cannot be rescaled; "
                                   f"add a 'serving' section to it in the settings")
    return target


def last_scale_up(session: Session, model_id: int, *, before: datetime) -> datetime | None:
    """When a ``rescale`` run last added replicas to the model (finished before ``before``), if ever."""
    runs = session.exec(
        select(ActionRun)
        .where(ActionRun.model_id == model_id, ActionRun.action == "rescale",
               ActionRun.state == ActionState.succeeded.value, col(ActionRun.finished_at).is_not(None),
               col(ActionRun.finished_at) < before)
        .order_by(col(ActionRun.finished_at).desc())
        .limit(50)
    )
    for run in runs:
        result = run.result or {}
        if isinstance(result.get("to"), int) and isinstance(result.get("from"), int) and result["to"] > result["from"]:
            return run.finished_at
    return None


@action("rescale", params=RescaleParams, retries=2)
def rescale(ctx: ActionContext, params: RescaleParams) -> dict[str, Any]:
    """Scale the model's replicas to the requested count, within its bounds."""
    target = serving_target(ctx)
    assert ctx.config.serving is not None  # serving_target raised otherwise
    bounds = ctx.config.serving.replicas
    try:
        current = target.replicas()
    except ServingError as exc:
        raise action_error(exc) from None
    requested = params.replicas if params.replicas is not None else max(0, current + (params.by or 0))
    step = plan_replicas(current, requested, bounds, at=ctx.at,
                         last_scale_up_at=last_scale_up(ctx.session, ctx.model.id, before=ctx.at))
    result: dict[str, Any] = {"from": current, "requested": requested, "to": step.target,
                              "limited_by": step.limited_by, "reason": step.reason}
    if step.changes:
        try:
            result["to"] = target.scale(step.target)
        except ServingError as exc:
            raise action_error(exc) from None
    try:
        health = target.health()
    except ServingError as exc:  # the scaling is done: failing now would lose it from the record
        result.update(ready=None, endpoints=[], health=str(exc))
        return result
    result["ready"] = health.ready
    result["endpoints"] = list(health.endpoints)
    result["health"] = str(health)
    return result
