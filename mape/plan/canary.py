"""Judging a canary's steps: did the policy's ``verify`` hold over the step's bake time?

What it does: a ``retrain`` whose parameters ask for a ``canary`` leaves its
candidate serving a share of the replicas (:mod:`mape.execute.canary`), one
step at a time. Each tick, :meth:`CanaryJudge.judge` evaluates the deciding
policy version's ``verify.expect`` for every running canary whose current step
has no verdict yet, by the rules of ``verify`` (:mod:`mape.plan.verification`):

* from the tick after the step started, every tick counts true, false, or an
  error (a missing or stale signal, never a failure) on the canary's row; a
  tick at or before ``last_verified_at`` counts nothing;
* at the first tick at or after the step's end of bake time (``step_until``)
  the step's verdict is taken: ``inconclusive`` below ``min_evaluations``
  successful evaluations, else ``pass`` or ``fail`` by the last one.

The expectation sees the model's context with ``performance`` and ``baseline``
taken from the candidate (:func:`mape.plan.context.canary_view`): the scores of
the predictions the canary's replicas served (the Monitor's ``canary.*``
observations of the candidate's version) and the candidate's training
metrics. So ``performance.accuracy >= baseline.accuracy - 0.03`` judges the
candidate during its canary exactly as it judges it after the promotion.

The verdict goes on the row as ``step_verdict`` (and into its ``history``,
with the counts), with the audit event ``canary.step_<verdict>``; the Execute
stage acts on it in the same tick (widen, promote, or abort). A step that does
not hold is also the verdict of the run that started the canary: its
``verdict`` becomes ``fail`` or ``inconclusive`` with the outcome
``canary_aborted`` (``verification.<verdict>`` in the audit trail), which
blocks the policy on the model as any failed change does, and nothing is
rolled back: production never changed. A canary started without an
expectation (a person's request: there is no policy) passes each step at the
end of its bake time, and its events say so.

Who calls it: :meth:`mape.plan.verification.Verifier.verify`, first in each
verification pass.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection, Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlmodel import Session

from knowledge import audit, queries
from knowledge.canaries import running_canaries
from knowledge.tables import ActionRun, Canary, Decision, ManagedModel, ModelVersion, Verdict
from mape._util.timeutil import ensure_utc
from mape.plan.context import canary_view
from mape.plan.expressions import Condition, ConditionError
from mape.plan.verdicts import VerdictRecord, VerificationReport, reading

__all__ = ["CanaryJudge"]

logger = logging.getLogger(__name__)

Contexts = Callable[[Session, Sequence[ManagedModel], datetime, VerificationReport], dict[int, dict[str, Any]]]


class CanaryJudge:
    """Judges the current step of every running canary against its policy's ``verify``.

    Parameters
    ----------
    actor : str
        Recorded in audit events.
    max_age : timedelta, optional
        Staleness bound of signals: an older ``canary.*`` observation is absent.
    spec_of : callable
        The ``verify`` snapshot of a policy version by its sha256 (None: none).
    condition : callable
        The compiled expectation of a text (or why it does not compile).
    contexts : callable
        The models' contexts at a tick, by model id.
    """

    def __init__(self, *, actor: str, max_age: timedelta | None,
                 spec_of: Callable[[str | None], dict[str, Any] | None],
                 condition: Callable[[str], Condition | ConditionError], contexts: Contexts) -> None:
        self.actor = actor
        self.max_age = max_age
        self.spec_of = spec_of
        self.condition = condition
        self.contexts = contexts

    def judge(self, session: Session, at: datetime, report: VerificationReport, *,
              models: Collection[int] | None = None) -> None:
        """Count this tick's evaluation of every baking step, and take the verdicts that are due (flushed).

        With ``models``, only those models' canaries.
        """
        due: list[tuple[Canary, ActionRun, Decision]] = []
        for canary, run, decision in running_canaries(session, None if models is None else list(models)):
            if canary.step_verdict is not None or at <= ensure_utc(canary.step_started_at):
                continue  # judged (the Execute stage acts on it), or judged from the tick after the step started
            if canary.last_verified_at is not None and at <= ensure_utc(canary.last_verified_at):
                continue  # a replayed (or older) tick: already counted
            due.append((canary, run, decision))
        if not due:
            return
        models = queries.models_by_id(session, {canary.model_id for canary, _, _ in due})
        contexts = self.contexts(session, list(models.values()), at, report)
        oldest = at - self.max_age if self.max_age is not None else None
        observed = queries.latest_summary_metrics_fleet(session, list(models), until=at, since=oldest,
                                                        prefixes=("canary.",))
        for canary, run, decision in due:
            candidate = session.get(ModelVersion, canary.version_id)
            assert candidate is not None  # a foreign key
            spec = self._spec(run, decision)
            if spec is not None:
                context = contexts.get(canary.model_id)
                view = None if context is None else canary_view(
                    context, self._of_candidate(canary, candidate, observed.get(canary.model_id, {})),
                    candidate.metrics, oldest=oldest)
                self._evaluate(canary, models.get(canary.model_id), spec, view, report)
            canary.last_verified_at = at
            canary.updated_at = at
            if at >= ensure_utc(canary.step_until):
                self._conclude(session, canary, run, decision, models.get(canary.model_id), candidate, spec, at,
                               report)
            session.add(canary)
        session.flush()

    def _spec(self, run: ActionRun, decision: Decision) -> dict[str, Any] | None:
        """The expectation the canary is judged by: the deciding policy version's ``verify`` (snapshot on the run)."""
        if run.verification.get("expect"):
            return dict(run.verification)
        spec = self.spec_of(decision.policy_sha256)
        if spec is None:
            return None
        run.verification = {**spec, "policy_sha256": decision.policy_sha256}  # a later edit changes nothing
        return dict(run.verification)

    @staticmethod
    def _of_candidate(canary: Canary, candidate: ModelVersion, observations: dict[str, Any]) -> dict[str, Any]:
        """The ``canary.*`` observations of this canary's candidate: written after it started, naming its version."""
        version = observations.get("canary.version")
        if version is None or version.value != candidate.version \
                or ensure_utc(version.time) <= ensure_utc(canary.created_at):
            return {}
        return {name: obs for name, obs in observations.items() if ensure_utc(obs.time) == ensure_utc(version.time)}

    def _evaluate(self, canary: Canary, model: ManagedModel | None, spec: dict[str, Any],
                  view: dict[str, Any] | None, report: VerificationReport) -> None:
        value, error = reading(self.condition(spec["expect"]), view)
        if value is None:
            canary.verify_errors += 1
            report.errors.append(f"{canary} on model {model.name if model else canary.model_id}: verify.expect: "
                                 f"{error}; counted as an error, not a failure")
        else:
            if value:
                canary.verify_true += 1
            else:
                canary.verify_false += 1
            canary.verify_last = value
        report.evaluated += 1

    def _conclude(self, session: Session, canary: Canary, run: ActionRun, decision: Decision,
                  model: ManagedModel | None, candidate: ModelVersion, spec: dict[str, Any] | None, at: datetime,
                  report: VerificationReport) -> None:
        counts = {"true": canary.verify_true, "false": canary.verify_false, "errors": canary.verify_errors}
        if spec is None:
            verdict, how = Verdict.passed.value, "no verify expectation (no policy decided it): passed on its bake time"
        elif canary.verify_true + canary.verify_false < int(spec.get("min_evaluations", 1)):
            verdict = Verdict.inconclusive.value
            how = f"{spec.get('min_evaluations', 1)} successful evaluations needed"
        else:
            verdict = Verdict.passed.value if canary.verify_last else Verdict.failed.value
            how = f"it was {'true' if canary.verify_last else 'false'} on the last evaluation"
        expect = f"expect `{spec['expect']}`" if spec is not None else "no expectation"
        what = (f"canary step {canary.step + 1} of {len(canary.steps)} ({canary.share:.0%} of the replicas, "
                f"{canary.replicas} beside {canary.stable_replicas}) of version {candidate.version}: {expect} "
                f"({counts['true']} true, {counts['false']} false, {counts['errors']} errors); {how}")
        canary.step_verdict = verdict
        canary.history = [*canary.history, {
            "step": canary.step + 1, "share": canary.share, "replicas": canary.replicas,
            "stable_replicas": canary.stable_replicas, "started_at": ensure_utc(canary.step_started_at).isoformat(),
            "until": ensure_utc(canary.step_until).isoformat(), "judged_at": at.isoformat(), "verdict": verdict,
            **counts, "expect": spec["expect"] if spec is not None else None}]
        model_name = model.name if model is not None else str(canary.model_id)
        payload = {"canary_id": canary.id, "run_id": run.id, "decision_id": decision.id, "model": model_name,
                   "policy": decision.policy_name, "version": candidate.version, "step": canary.step + 1,
                   "share": canary.share, "verdict": verdict, **counts, "reason": what}
        audit.record(session, actor=self.actor, kind=f"canary.step_{verdict}", subject=f"{canary} of {model}",
                     payload=payload, time=at)
        report.canary_steps.append(f"model {model_name}: {what}: {verdict}")
        if verdict == Verdict.passed.value:
            logger.info("Model %s: %s: passed", model_name, what)
            return
        # the run's change did not hold: its verdict, with no rollback (production never changed)
        why = f"{what}; the canary is withdrawn and production stays as it is"
        run.verdict, run.verdict_at = verdict, at
        run.verify_true, run.verify_false, run.verify_errors = counts["true"], counts["false"], counts["errors"]
        run.verify_last = canary.verify_last
        run.verification = {**(spec or {}), "outcome": {"verdict": verdict, "outcome": "canary_aborted", "reason": why,
                                                        "decision_id": None}}
        session.add(run)
        audit.record(session, actor=self.actor, kind=f"verification.{verdict}", subject=str(run), time=at,
                     payload={**payload, "outcome": "canary_aborted", "follow_up_decision_id": None,
                              "expect": spec.get("expect") if spec else None})
        logger.warning("Model %s: %s: %s; the canary is withdrawn", model_name, what, verdict)
        assert run.id is not None
        report.verdicts.append(VerdictRecord(
            run_id=run.id, model=model_name, policy=decision.policy_name, action=run.action, verdict=verdict,
            true=counts["true"], false=counts["false"], errors=counts["errors"], outcome="canary_aborted"))
