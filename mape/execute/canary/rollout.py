"""Move running canaries on, as the verification of their current step said: widen, promote or abort.

Who calls it: the controller, once per tick, after the Plan stage's
verification judged the canaries' current steps (:mod:`mape.plan.canary`
writes ``step_verdict``) and before planning, so a canary that ends frees its
model for the planner in the same tick (:meth:`CanaryRollout.advance`).

For each running canary (:class:`~knowledge.tables.Canary`):

* its step has no verdict yet: nothing (it bakes);
* ``pass`` and a next step: **widen**: the canary's replicas go to the next
  share of production's replicas (counted again now), and the next step bakes
  from this tick (``canary.widened``);
* ``pass`` at the last step: **promote**: production's replicas are moved to
  the candidate first (the local target's are replaced by replicas of it, new
  ones answering before old ones stop; a Kubernetes Deployment's pod template
  gets the candidate's model reference and its pods roll, with
  ``serving.kubernetes.promote: patch``, waited for up to
  ``rollout_timeout``), then the candidate becomes production
  (:func:`knowledge.registry.promote`, the previous production archived) and
  the canary's replicas are removed (``canary.promoted``, with how
  production's replicas stand: :func:`mape.execute.production_serving.describe`); the run's own
  ``verify`` then starts, as after any promotion. With ``promote: pipeline``
  the event says that production's pod template waits for the delivery
  pipeline;
* ``fail`` or ``inconclusive``: **abort**: the canary's replicas are removed
  and the candidate is recorded as rejected with the steps' numbers
  (``canary.aborted``); production is untouched.

A canary also ends when the registry changed under it: a person promoted or
rejected its candidate (``canary.superseded``), or production is no longer
the version it started beside (aborted); and when the run that started it is
no longer ``succeeded`` (aborted: nothing owns the canary then). A serving failure while widening or
promoting leaves the step as it is, to be tried again at the next tick
(``canary.retrying``); after :data:`MAX_ATTEMPTS` failures, or at once for a
failure that only a person can mend (an unknown Deployment, a refused token),
the canary is aborted. Removing replicas is tried even so, and a failure to
remove them is recorded in the abort.

Each canary moves in a transaction of its own, committed after its serving
change, and every serving change is idempotent (absolute counts), so a tick
that crashes between the two repeats the same change at the next tick, and
a restarted controller carries on from the row.
"""

from __future__ import annotations

import logging
from collections.abc import Collection
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy.engine import Engine
from sqlmodel import Session

from knowledge import audit, registry
from knowledge.canaries import running_canaries
from knowledge.database import session_scope
from knowledge.tables import ActionRun, ActionState, Canary, CanaryState, ManagedModel, ModelVersion, Stage
from mape._util.timeutil import ensure_utc, parse_duration
from mape.config import ModelConfig
from mape.errors import CanaryNotSupportedError, ServingError
from mape.execute.canary.begin import summary
from mape.execute.canary.orphans import WITHDRAW_FAILED
from mape.execute.placement import place, roll, withdraw
from mape.execute.production_serving import describe
from mape.execute.serving import version_artifact
from mape.serving.canary import canary_replicas
from mape.serving.factory import canary_target_for, target_for
from mape.serving.target import ServingTarget

__all__ = ["MAX_ATTEMPTS", "CanaryMove", "CanaryRollout", "RolloutReport"]

log = logging.getLogger(__name__)

#: Failed tries to widen or promote (transient serving failures) before a canary is aborted.
MAX_ATTEMPTS = 3


@dataclass(frozen=True)
class CanaryMove:
    """What happened to one canary in a pass.

    Parameters
    ----------
    canary_id : int
        The canary.
    model : str
        Its model.
    version : int
        Its candidate's version number.
    move : str
        ``widened``, ``promoted``, ``aborted``, ``superseded`` or ``retrying``.
    step, steps : int
        The step it is at now (1-based), and how many it has.
    share : float
        That step's share of the replicas.
    replicas : int
        Canary replicas now.
    detail : str
        One sentence: why.
    """

    canary_id: int
    model: str
    version: int
    move: str
    step: int
    steps: int
    share: float
    replicas: int
    detail: str

    def __str__(self) -> str:
        return (f"canary {self.canary_id} of model {self.model} version {self.version} {self.move} "
                f"(step {self.step} of {self.steps}, {self.share:.0%}, {self.replicas} replicas): {self.detail}")


@dataclass
class RolloutReport:
    """What one :meth:`CanaryRollout.advance` pass did: the moves, and canaries whose pass failed."""

    at: datetime
    moves: list[CanaryMove] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"at": self.at.isoformat(), "moves": [str(move) for move in self.moves], "errors": list(self.errors)}


class CanaryRollout:
    """Widens, promotes and aborts running canaries on the models' serving targets.

    Parameters
    ----------
    engine : Engine
        The knowledge base.
    models : dict of str to ModelConfig
        The managed models' configuration, by name (their ``serving`` sections).
    serving_dir : Path
        State of the local serving target.
    actor : str
        Recorded in audit events.
    """

    def __init__(self, engine: Engine, *, models: dict[str, ModelConfig], serving_dir: Path,
                 actor: str = "controller") -> None:
        self.engine = engine
        self.models = models
        self.serving_dir = Path(serving_dir)
        self.actor = actor

    def advance(self, at: datetime, *, models: Collection[int] | None = None) -> RolloutReport:
        """Act on every running canary whose step was judged (or whose registry changed); one transaction each.

        With ``models``, only those models' canaries.
        """
        at = ensure_utc(at)
        report = RolloutReport(at=at)
        with session_scope(self.engine) as session:
            ids = [canary.id for canary, _, _ in running_canaries(session, None if models is None else list(models))]
        for canary_id in ids:
            try:
                with session_scope(self.engine) as session:
                    move = self._advance(session, canary_id, at)
            except Exception as exc:  # noqa: BLE001 - one canary's failure never stops the others or the tick
                log.exception("Canary %s could not be moved on at %s", canary_id, at)
                report.errors.append(f"canary {canary_id}: {type(exc).__name__}: {exc}")
                continue
            if move is not None:
                log.info("%s", move)
                report.moves.append(move)
        return report

    # ------------------------------------------------------------------ one canary

    def _advance(self, session: Session, canary_id: int | None, at: datetime) -> CanaryMove | None:
        canary = session.get(Canary, canary_id)
        if canary is None or canary.state != CanaryState.running.value:
            return None  # another controller moved it meanwhile
        model = session.get(ManagedModel, canary.model_id)
        candidate = session.get(ModelVersion, canary.version_id)
        assert model is not None and candidate is not None  # foreign keys
        cfg = self.models.get(model.name)
        production = registry.production_version(session, canary.model_id)
        if candidate.stage != Stage.canary.value:
            who = "promoted" if candidate.stage == Stage.production.value else f"moved to {candidate.stage}"
            return self._end(session, canary, model, candidate, cfg, at, state=(
                CanaryState.promoted if candidate.stage == Stage.production.value else CanaryState.aborted),
                move="superseded", reason=f"version {candidate.version} was {who} outside the canary")
        if production is None or production.id != canary.champion_version_id:
            now = f"version {production.version}" if production is not None else "no version"
            return self._abort(session, canary, model, candidate, cfg, at,
                               reason=f"production changed under the canary (it is {now} now)")
        run = session.get(ActionRun, canary.action_run_id)
        if run is None or run.state != ActionState.succeeded.value:
            state = run.state if run is not None else "gone"
            return self._abort(session, canary, model, candidate, cfg, at,
                               reason=f"its retrain run {canary.action_run_id} is {state}, not succeeded")
        if canary.step_verdict is None:
            return None
        if cfg is None:
            return self._abort(session, canary, model, candidate, cfg, at,
                               reason=f"model {model.name} is no longer in the configuration")
        if canary.step_verdict != "pass":
            return self._abort(session, canary, model, candidate, cfg, at,
                               reason=f"step {canary.step + 1} ({canary.share:.0%}) ended {canary.step_verdict} "
                                      f"at verification")
        try:
            if canary.last_step:
                return self._promote(session, canary, model, candidate, cfg, at)
            return self._widen(session, canary, model, candidate, cfg, at)
        except (ServingError, CanaryNotSupportedError) as exc:
            return self._retry(session, canary, model, candidate, cfg, at, exc)

    def _targets(self, cfg: ModelConfig, candidate: ModelVersion) -> tuple[ServingTarget, ServingTarget]:
        """Production's replicas and the canary's; new replicas of either serve the candidate."""
        canary_target = canary_target_for(cfg, self.serving_dir, version_artifact(candidate))
        stable_target = target_for(cfg, self.serving_dir, version_artifact(candidate))
        assert stable_target is not None  # canary_target_for raised without a serving section
        return stable_target, canary_target

    def _widen(self, session: Session, canary: Canary, model: ManagedModel, candidate: ModelVersion,
               cfg: ModelConfig, at: datetime) -> CanaryMove:
        stable_target, canary_target = self._targets(cfg, candidate)
        stable = stable_target.replicas()
        if stable < 1:
            raise CanaryNotSupportedError(f"{stable_target} runs no replica any more")
        step = canary.steps[canary.step + 1]
        replicas = place(canary_target, canary_replicas(stable, float(step["share"])))
        before = canary.share
        canary.step += 1
        canary.share = float(step["share"])
        canary.replicas, canary.stable_replicas = replicas, stable
        canary.step_started_at, canary.step_until = at, at + parse_duration(step["bake"])
        canary.step_verdict = canary.verify_last = None
        canary.verify_true = canary.verify_false = canary.verify_errors = canary.attempts = 0
        canary.message = ""
        canary.updated_at = at
        session.add(canary)
        detail = f"step {canary.step} held at {before:.0%}; widened to {canary.share:.0%} until {canary.step_until}"
        audit.record(session, actor=self.actor, kind="canary.widened", subject=f"{canary} of {model}", time=at,
                     payload={**summary(canary), "version": candidate.version, "from_share": before})
        return self._move(canary, model, candidate, "widened", detail)

    def _promote(self, session: Session, canary: Canary, model: ManagedModel, candidate: ModelVersion,
                 cfg: ModelConfig, at: datetime) -> CanaryMove:
        stable_target, _ = self._targets(cfg, candidate)
        # production's replicas move to the candidate before the canary's go away; may raise: retried
        rolled = roll(stable_target)
        reason = (f"canary {canary.id}: all {len(canary.steps)} steps held, the last at {canary.share:.0%} of the "
                  f"replicas")
        registry.promote(session, candidate, actor=self.actor, reason=reason, at=at,
                         evaluation=self._evaluation(canary, candidate, "promoted", reason))
        serving = describe(cfg, stable_target, candidate, rolled)
        detail = f"{reason}; version {candidate.version} is production; {serving['detail']}"
        # from here the promotion stands: a canary replica that cannot be removed is recorded, not retried
        return self._end(session, canary, model, candidate, cfg, at, state=CanaryState.promoted, move="promoted",
                         reason=detail, payload={"production_serving": serving})

    def _abort(self, session: Session, canary: Canary, model: ManagedModel, candidate: ModelVersion,
               cfg: ModelConfig | None, at: datetime, *, reason: str) -> CanaryMove:
        if candidate.stage == Stage.canary.value:
            registry.reject(session, candidate, actor=self.actor, at=at, reason=f"canary {canary.id}: {reason}",
                            evaluation=self._evaluation(canary, candidate, "aborted", reason))
        return self._end(session, canary, model, candidate, cfg, at, state=CanaryState.aborted, move="aborted",
                         reason=f"{reason}; production untouched")

    def _end(self, session: Session, canary: Canary, model: ManagedModel, candidate: ModelVersion,
             cfg: ModelConfig | None, at: datetime, *, state: CanaryState, move: str, reason: str,
             payload: dict[str, Any] | None = None) -> CanaryMove:
        problem = self._withdraw(cfg, candidate)
        canary.state = state.value
        canary.finished_at = canary.updated_at = at
        canary.message = reason + (f"; {WITHDRAW_FAILED}: {problem}" if problem else "")
        session.add(canary)
        audit.record(session, actor=self.actor, kind=f"canary.{move}", subject=f"{canary} of {model}", time=at,
                     payload={**summary(canary), "version": candidate.version, "reason": reason,
                              "withdraw_error": problem, "history": canary.history, **(payload or {})})
        if problem:
            log.error("%s of %s ended, but its replicas could not be removed: %s", canary, model, problem)
        return self._move(canary, model, candidate, move, canary.message)

    def _withdraw(self, cfg: ModelConfig | None, candidate: ModelVersion) -> str | None:
        """Remove the canary's replicas; the failure as a sentence, or None."""
        if cfg is None or cfg.serving is None:
            return None if cfg is not None else "the model is not configured, so its serving target is unknown"
        try:
            withdraw(canary_target_for(cfg, self.serving_dir, version_artifact(candidate)))
        except (ServingError, CanaryNotSupportedError) as exc:
            return str(exc)
        return None

    def _retry(self, session: Session, canary: Canary, model: ManagedModel, candidate: ModelVersion,
               cfg: ModelConfig, at: datetime, exc: ServingError | CanaryNotSupportedError) -> CanaryMove:
        canary.attempts += 1
        transient = isinstance(exc, ServingError) and exc.transient
        what = "promote" if canary.last_step else "widen"
        if not transient or canary.attempts >= MAX_ATTEMPTS:
            tries = f"after {canary.attempts} attempt(s)" if transient else "(not retried)"
            return self._abort(session, canary, model, candidate, cfg, at,
                               reason=f"the serving target could not {what} the canary {tries}: {exc}")
        canary.message = f"attempt {canary.attempts} to {what} failed; trying again at the next tick: {exc}"
        canary.updated_at = at
        session.add(canary)
        audit.record(session, actor=self.actor, kind="canary.retrying", subject=f"{canary} of {model}", time=at,
                     payload={**summary(canary), "version": candidate.version, "error": str(exc),
                              "attempts": canary.attempts})
        return self._move(canary, model, candidate, "retrying", canary.message)

    @staticmethod
    def _evaluation(canary: Canary, candidate: ModelVersion, outcome: str, reason: str) -> dict[str, Any]:
        """The candidate's evaluation with the canary's steps and outcome (``mape models show`` prints it)."""
        return {**(candidate.evaluation or {}), "canary": {
            "id": canary.id, "steps": canary.steps, "history": canary.history, "outcome": outcome, "reason": reason}}

    @staticmethod
    def _move(canary: Canary, model: ManagedModel, candidate: ModelVersion, move: str, detail: str) -> CanaryMove:
        assert canary.id is not None
        return CanaryMove(canary_id=canary.id, model=model.name, version=candidate.version, move=move,
                          step=canary.step + 1, steps=len(canary.steps), share=canary.share,
                          replicas=0 if canary.state != CanaryState.running.value else canary.replicas,
                          detail=detail)
