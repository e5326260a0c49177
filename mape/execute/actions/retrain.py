"""``retrain``: train a candidate on a recent window, and promote it only if it beats production.

Who calls it: the executor, for decisions whose action type is ``retrain``.

Windows, with ``at`` the tick's time: the labelled predictions made in
``[at - window, at)`` are read; the newest ``evaluation_window`` of them (by
prediction time) is held out as the champion/challenger set, and the older
rows train the candidate. So the gate always judges on data the candidate has
not seen, and on the most recent labelled data there is.

With ``canary`` in its parameters, a candidate that passed the gate is not
promoted at once: it serves the first share of the replicas beside
production (:mod:`mape.execute.canary`), and the run succeeds with the canary
running; later ticks widen it while the policy's ``verify`` holds, and
promote it after the last step. Where the model's serving cannot run a
canary (no serving section, no version column in the inference log, no
production replica), the promotion is direct, and the result, the
candidate's evaluation and the ``canary.unsupported`` audit event say why.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from knowledge import audit, registry
from mape._util.timeutil import format_duration, parse_duration
from mape.errors import CanaryNotSupportedError, TransientActionError
from mape.execute import canary as canaries, gate, production_serving
from mape.execute.canary import CanaryParams
from mape.execute.context import ActionContext
from mape.execute.registry import action
from mape.data.artifacts import join_location
from mape.execute.training import TrainingRequest, load_artifact, run_entrypoint, save_artifact

log = logging.getLogger(__name__)


class RetrainParams(BaseModel):
    """Parameters of ``retrain`` in a policy's ``action.params``."""

    model_config = ConfigDict(extra="allow")

    window: timedelta = timedelta(days=14)
    evaluation_window: timedelta | None = None
    min_train_rows: int = 200
    canary: CanaryParams | None = Field(
        None, description="Promote a candidate that passed the gate to a share of the replicas first, and widen "
                          "step by step while the policy's verify holds: {steps: [0.1, 0.5], bake: 1h}.")

    @field_validator("window", "evaluation_window", mode="before")
    @classmethod
    def _duration(cls, value: Any) -> Any:
        return None if value is None else parse_duration(value)

    @property
    def verify_required(self) -> tuple[tuple[str, ...], str] | None:
        """Where these parameters need the policy's ``spec.verify``, and why (the policy loader asks)."""
        if self.canary is None:
            return None
        return ("canary",), ("a canary widens only while the policy's verify holds over each step's bake time; "
                             "add spec.verify (expect and within)")


@action("retrain", params=RetrainParams, retries=2, retry_delay=timedelta(minutes=5), timeout=timedelta(hours=2))
def retrain(ctx: ActionContext, params: RetrainParams) -> dict[str, Any]:
    """Train a candidate version and promote it if it is at least as good as production."""
    cfg = ctx.config
    evaluation_window = params.evaluation_window or cfg.promotion.evaluation_window
    start = ctx.at - params.window
    data = ctx.labelled(start, ctx.at)
    if data.empty:
        raise TransientActionError(f"no labelled data for model {cfg.name} in [{start}, {ctx.at}) yet", delay=3600)
    newest = data["timestamp"].max()
    holdout_start = newest - evaluation_window
    evaluation = data[data["timestamp"] > holdout_start]
    training = data[data["timestamp"] <= holdout_start]
    if len(training) < params.min_train_rows:
        raise TransientActionError(
            f"only {len(training)} labelled training rows for model {cfg.name} in the last "
            f"{format_duration(params.window)}; at least {params.min_train_rows} are needed", delay=3600)

    request = TrainingRequest(
        model_name=cfg.name, data=training.reset_index(drop=True), features=cfg.features.all,
        numeric=list(cfg.features.numeric), categorical=list(cfg.features.categorical),
        window_start=training["timestamp"].min().floor("us").to_pydatetime(),
        window_end=holdout_start.floor("us").to_pydatetime(),
        params={**cfg.training.params,
                **params.model_dump(exclude={"window", "evaluation_window", "min_train_rows", "canary"})},
    )
    trained = run_entrypoint(cfg.training.entrypoint, request)
    uri = save_artifact(trained.estimator, join_location(ctx.artifacts_dir, cfg.name, f"run-{ctx.run.id}"))
    candidate = registry.register_version(
        ctx.session, model_id=ctx.model.id, artifact_uri=uri,
        metrics={"train_rows": len(training), **trained.metrics},
        training_window=(request.window_start, request.window_end), created_by_action_run_id=ctx.run.id,
        actor=ctx.actor,
    )

    production = registry.production_version(ctx.session, ctx.model.id)
    champion = load_artifact(production.artifact_uri) if production is not None else None
    promotion = cfg.promotion
    verdict = gate.compare(
        trained.estimator, champion, evaluation, features=cfg.features.all, task=cfg.task,
        margin=promotion.margin, min_samples=promotion.min_samples, test=promotion.test,
        confidence=promotion.confidence, sensitive=cfg.fairness.sensitive if cfg.fairness else (),
        fairness_bound=promotion.fairness_bound, fairness_metric=promotion.fairness_metric,
        min_group_size=cfg.fairness.min_group_size if cfg.fairness else 50,
    )
    numbers = {**verdict.as_dict(), "champion_version": production.version if production else None,
               "evaluation_window": [str(holdout_start), str(newest)]}
    result: dict[str, Any] = {
        "version": candidate.version, "promoted": verdict.passed, "reason": verdict.reason,
        "candidate": verdict.candidate, "champion": verdict.champion, "n_evaluation": verdict.n,
        "n_train": len(training)}
    if not verdict.passed:
        registry.reject(ctx.session, candidate, actor=ctx.actor, reason=verdict.reason, evaluation=numbers, at=ctx.at)
        log.info("Model %s version %d rejected: %s", cfg.name, candidate.version, verdict.reason)
        return result
    candidate.metrics = {**candidate.metrics, **verdict.candidate}
    if params.canary is not None:
        try:
            canary = canaries.begin(ctx, params.canary, candidate, production, reason=verdict.reason,
                                    evaluation=numbers)
        except CanaryNotSupportedError as exc:
            numbers["canary"] = {"outcome": "unsupported", "reason": exc.reason}
            result["canary"] = {"state": "unsupported", "reason": exc.reason}
            audit.record(ctx.session, actor=ctx.actor, kind="canary.unsupported", time=ctx.at,
                         subject=f"model_id={ctx.model.id} {candidate}",
                         payload={"reason": exc.reason, "decision": ctx.decision.id, "run": ctx.run.id,
                                  "promotion": "direct"})
            log.warning("Model %s version %d is promoted without a canary: %s", cfg.name, candidate.version,
                        exc.reason)
        else:
            result.update(promoted=False, canary=canaries.summary(canary))
            return result
    registry.promote(ctx.session, candidate, actor=ctx.actor, reason=f"decision {ctx.decision.id}: {verdict.reason}",
                     evaluation=numbers, at=ctx.at)
    serving = production_serving.move(ctx, candidate)  # may raise: the promotion is undone with the attempt
    if serving is not None:
        result["production_serving"] = serving
    log.info("Model %s version %d promoted: %s", cfg.name, candidate.version, verdict.reason)
    return result
