"""Verification: after a policy's action succeeded, did it do what the policy expected?

What it does: a policy may carry ``verify`` (:class:`mape.plan.policy.Verify`):
an expectation ``expect`` in CEL over the same per-model context as ``when``
(:func:`mape.plan.context.build_context`), a bake time ``within``,
``min_evaluations`` and ``otherwise: rollback | escalate``. Each tick,
:meth:`Verifier.verify` looks at every succeeded action run whose decision was
made by a policy version with ``verify``, and at every run already under
verification:

* the first time, it snapshots the policy version's ``verify`` onto the run
  (``action_run.verification``), sets ``verdict`` to ``pending`` and
  ``verify_until`` to the run's end plus ``within``; a later edit of the
  policy does not change how a run already under way is judged;
* at every tick after the run finished, it evaluates ``expect`` on the model's
  context at the tick and counts the result: ``verify_true``,
  ``verify_false``, or ``verify_errors`` when it cannot be evaluated (a missing
  or stale signal, a type error). **An error is never a failure.** A tick at or
  before ``last_verified_at`` counts nothing, so a replayed tick cannot count
  twice;
* at the first tick at or after ``verify_until`` it takes the verdict:

  - ``inconclusive`` when fewer than ``min_evaluations`` evaluations succeeded;
  - else ``pass`` when the **last successful evaluation** was true, ``fail``
    when it was false.

  There is no early verdict either way: a false reading inside the bake time
  may still recover (the change has not taken effect yet, or a lagging signal
  such as a symptom with hysteresis has not caught up). A regression too
  serious to wait for is the job of symptom-driven policies, which keep
  running during the bake time.

Why the last reading and not the majority: the expectation is about the state
the change leads to, not the way there. Many signals lag the change (a symptom
closes only after its ``clear_ticks``; a windowed metric still holds readings
from before), so a good change typically reads false, false, true; a majority
would fail it. The signals are already windowed aggregates behind a staleness
bound, and an author who fears noise can write a margin into ``expect``; and a
wrong ``fail`` costs a rollback to the last known-good version, the smallest
step the loop can take.

What a verdict does (each one appends an audit event ``verification.<verdict>``):

* ``pass``: nothing more.
* ``fail`` with ``otherwise: rollback``: a ``rollback`` decision, ``proposed``,
  so it acts in this tick. When a rollback cannot be proposed safely (see
  below) or ``otherwise: escalate``: the audit event
  ``verification.escalated``, and a ``rollback`` decision
  ``awaiting_approval`` when a rollback is possible at all.
* ``inconclusive``: a person decides: a ``rollback`` decision
  ``awaiting_approval`` when a rollback is possible.

A rollback is possible only when the version in production was promoted while
the run ran (the run made the change that is being undone; a retrain whose
candidate the gate rejected changed nothing) and there is an earlier
production version to return to (:func:`knowledge.registry.rollback_target`).
It is proposed automatically only if, in addition, no other action run of the
model is in flight. A follow-up decision is keyed
``<model>/<policy>/verification/<run id>`` (a repeated tick adds nothing),
names its run in ``follows_run_id`` (it is never verified itself), carries
the counts, the expectation and the context in its evidence, and takes the
model's one acting slot of the tick: this stage runs before the planner.

A ``fail`` or ``inconclusive`` verdict also **blocks** the policy for that
model: the same change is not retried until a symptom of the model opens after
the verdict or a person lifts the block
(:func:`knowledge.queries.verification_blocks`,
:func:`knowledge.queries.lift_verification_block`); :func:`block_reason`
words it for a suppressed decision.

A run that started a canary (``retrain`` with ``canary``) is judged in two
parts. While the canary runs, each of its steps is judged by the same
expectation over the step's bake time (:mod:`mape.plan.canary`, first in each
pass); a step that does not hold is the run's verdict (outcome
``canary_aborted``, no rollback: production never changed). Once the canary
promoted the candidate, the run's own verification starts as above, its bake
time counted from the promotion, and a rollback undoes that promotion.

Who calls it: the controller, once per tick, after analysis and before
planning; tests. It reads policy versions from the knowledge base (the version
that made each decision), so it needs no policy library of its own.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Sequence
from datetime import datetime, timedelta
from typing import Any

import yaml
from pydantic import ValidationError
from sqlalchemy.exc import SQLAlchemyError
from sqlmodel import Session

from knowledge import audit, queries, registry
from knowledge.canaries import canaries_by_run, canary_of_run
from knowledge.tables import ActionRun, CanaryState, Decision, DecisionStatus, ManagedModel, Verdict
from mape._util.timeutil import ensure_utc, format_duration, parse_duration
from mape.plan.canary import CanaryJudge
from mape.plan.context import build_context, build_contexts
from mape.plan.expressions import Condition, ConditionError
from mape.plan.policy import Policy
from mape.plan.verdicts import VerdictRecord, VerificationReport, reading

__all__ = ["VerdictRecord", "VerificationReport", "Verifier", "block_reason", "verify_spec_of"]

logger = logging.getLogger(__name__)

FOLLOW_UP_ACTION = "rollback"


def verify_spec_of(text: str) -> dict[str, Any] | None:
    """The ``verify`` of a stored policy version, as the snapshot kept on a run; None without one.

    A text that no longer validates (an older format) has none.

    >>> text = '''
    ... apiVersion: mape/v1
    ... kind: Policy
    ... metadata: {name: p}
    ... spec:
    ...   when: "true"
    ...   action: {type: retrain}
    ...   verify: {expect: "performance.accuracy_drop < 0.02", within: 2h}
    ... '''
    >>> spec = verify_spec_of(text)
    >>> spec["expect"], spec["within"], spec["min_evaluations"], spec["otherwise"]
    ('performance.accuracy_drop < 0.02', '2h', 1, 'rollback')
    """
    try:
        documents = [d for d in yaml.safe_load_all(text) if d is not None]
        if len(documents) != 1:
            return None
        policy = Policy.model_validate(documents[0])
    except (yaml.YAMLError, ValidationError, TypeError, ValueError):
        return None
    verify = policy.spec.verify
    if verify is None:
        return None
    return {
        "policy": policy.metadata.name,
        "expect": verify.expect,
        "within": format_duration(verify.within),
        "min_evaluations": verify.min_evaluations,
        "otherwise": verify.otherwise,
        "approval_timeout": format_duration(policy.spec.approval_timeout),
    }


def block_reason(run: ActionRun) -> str:
    """The reason of a decision suppressed because ``run``'s verification blocks its policy on the model."""
    at = ensure_utc(run.verdict_at).isoformat() if run.verdict_at is not None else "?"
    return (f"blocked: {run.action} run {run.id} ended {run.verdict} at verification at {at}; "
            f"not retried until a new symptom opens or a person lifts the block")


class Verifier:
    """Judges succeeded action runs against their policy's ``verify``, tick by tick.

    Parameters
    ----------
    actor : str
        Recorded on follow-up decisions and audit events, e.g. the controller id.
    max_age : timedelta, optional
        Staleness bound of signals (as the planner's): an older signal is
        absent, so an expectation that reads it counts an error.

    Examples
    --------
    >>> Verifier(actor="controller").actor
    'controller'
    """

    def __init__(self, *, actor: str = "controller", max_age: timedelta | None = None) -> None:
        self.actor = actor
        self.max_age = max_age
        self._specs: dict[str, dict[str, Any] | None] = {}  # by policy version sha256
        self._conditions: dict[str, Condition | ConditionError] = {}  # by expectation text
        self.canaries = CanaryJudge(actor=actor, max_age=max_age, spec_of=lambda sha: self._specs.get(sha or ""),
                                    condition=self._condition, contexts=self._contexts)

    # ------------------------------------------------------------------ policy versions

    def _verifying_versions(self, session: Session) -> list[str]:
        """The sha256 of every stored policy version that has ``verify`` (texts parsed once per process)."""
        hashes = queries.policy_version_hashes(session)
        unseen = [id_ for sha, id_ in hashes.items() if sha not in self._specs]
        for version in queries.policy_versions_by_id(session, unseen):
            self._specs[version.sha256] = verify_spec_of(version.text)
        return [sha for sha in hashes if self._specs.get(sha) is not None]

    def _condition(self, expect: str) -> Condition | ConditionError:
        if expect not in self._conditions:
            try:
                self._conditions[expect] = Condition(expect)
            except ConditionError as exc:
                self._conditions[expect] = exc
        return self._conditions[expect]

    # ------------------------------------------------------------------ the pass

    def verify(self, session: Session, at: datetime, *, models: Collection[int] | None = None) -> VerificationReport:
        """Evaluate every run under verification at ``at``, and take the verdicts that are due.

        Parameters
        ----------
        session : Session
            Open session on the knowledge base; changes are flushed, the
            caller commits.
        at : datetime
            The tick's logical time (aware UTC).
        models : collection of int, optional
            Only these models' runs and canaries (the ones this controller
            holds the leases of); none: all.

        Returns
        -------
        VerificationReport
        """
        at = ensure_utc(at)
        report = VerificationReport(at=at)
        verifying = self._verifying_versions(session)
        # the steps of running canaries (their runs changed nothing yet)
        self.canaries.judge(session, at, report, models=models)
        due: list[tuple[ActionRun, Decision]] = []
        rows = queries.runs_to_verify(session, policy_sha256s=verifying, models=models)
        promoted = canaries_by_run(session, [run.id for run, _ in rows if run.verdict is None and run.id is not None])
        for run, decision in rows:
            canary = promoted.get(run.id)  # type: ignore[arg-type]
            finished = canary.finished_at if canary is not None else run.finished_at  # its change: the promotion
            if finished is None or ensure_utc(finished) >= at:
                continue  # judged from the tick after it finished
            if run.last_verified_at is not None and at <= ensure_utc(run.last_verified_at):
                continue  # a replayed (or older) tick: already counted
            if run.verdict is None and not self._start(run, decision, at, report, finished=finished):
                continue
            due.append((run, decision))
        if not due:
            return report
        models = queries.models_by_id(session, {run.model_id for run, _ in due})
        contexts = self._contexts(session, list(models.values()), at, report)
        for run, decision in due:
            model = models.get(run.model_id)
            context = contexts.get(run.model_id)
            self._evaluate(run, model, context, at, report)
            if at >= ensure_utc(run.verify_until):  # type: ignore[arg-type]  # set when verification starts
                self._conclude(session, run, decision, model, context, at, report)
            session.add(run)
        session.flush()
        logger.debug("%s", report)
        return report

    def _start(self, run: ActionRun, decision: Decision, at: datetime, report: VerificationReport, *,
               finished: datetime) -> bool:
        """Start judging ``run`` over the bake time from ``finished`` (its end, or its canary's promotion)."""
        spec = self._specs.get(decision.policy_sha256 or "")
        if spec is None:
            return False
        run.verification = {**spec, "policy_sha256": decision.policy_sha256}
        run.verdict = Verdict.pending.value
        run.verify_until = ensure_utc(finished) + parse_duration(spec["within"])
        run.verify_true = run.verify_false = run.verify_errors = 0
        assert run.id is not None
        report.started.append(run.id)
        logger.info("%s: verifying %r until %s", run, spec["expect"], run.verify_until.isoformat())
        return True

    def _contexts(self, session: Session, models: Sequence[ManagedModel], at: datetime,
                  report: VerificationReport) -> dict[int, dict[str, Any]]:
        """Every model's context at ``at``, fleet-wide; model by model if that fails (a model that fails has none)."""
        try:
            return build_contexts(session, models, at, max_age=self.max_age)
        except SQLAlchemyError:
            raise
        except Exception:  # noqa: BLE001 - find the model whose context breaks; its runs count an error
            logger.warning("Building contexts for verification failed; building them model by model", exc_info=True)
        contexts: dict[int, dict[str, Any]] = {}
        for model in models:
            try:
                contexts[model.id] = build_context(session, model, at, max_age=self.max_age)  # type: ignore[index]
            except SQLAlchemyError:
                raise
            except Exception as exc:  # noqa: BLE001 - a bad context is an error on this model's runs, never the tick's
                report.errors.append(f"{model}: cannot build the context: {type(exc).__name__}: {exc}")
        return contexts

    def _evaluate(self, run: ActionRun, model: ManagedModel | None, context: dict[str, Any] | None, at: datetime,
                  report: VerificationReport) -> None:
        condition = self._condition(run.verification.get("expect", ""))
        value, error = reading(condition, None if model is None else context)
        if value is True:
            run.verify_true += 1
            run.verify_last = True
        elif value is False:
            run.verify_false += 1
            run.verify_last = False
        else:
            run.verify_errors += 1
            report.errors.append(f"{run} on model {model.name if model else run.model_id}: verify.expect: {error}; "
                                 f"counted as an error, not a failure")
        run.last_verified_at = at
        run.verification = {**run.verification, "last": {"at": at.isoformat(), "value": value, "error": error}}
        report.evaluated += 1

    # ------------------------------------------------------------------ the verdict

    @staticmethod
    def _verdict(run: ActionRun) -> str:
        successful = run.verify_true + run.verify_false
        if successful < int(run.verification.get("min_evaluations", 1)):
            return Verdict.inconclusive.value
        return Verdict.passed.value if run.verify_last else Verdict.failed.value

    @staticmethod
    def _rollback_problem(session: Session, run: ActionRun) -> str | None:
        """Why the change of ``run`` cannot be rolled back; None when it can."""
        production = registry.production_version(session, run.model_id)
        started, finished = run.started_at, run.finished_at
        canary = canary_of_run(session, run.id) if run.id is not None else None
        if canary is not None and canary.state == CanaryState.promoted.value:
            finished = canary.finished_at  # the run's change reached production when its canary's last step held
        promoted = production.promoted_at if production is not None else None
        if production is None or promoted is None or started is None or finished is None \
                or not ensure_utc(started) <= ensure_utc(promoted) <= ensure_utc(finished):
            now = f"version {production.version}" if production is not None else "no version"
            return f"{run} did not put the version in production now ({now}) there: there is no change of it to undo"
        if registry.rollback_target(session, run.model_id) is None:
            return f"there is no earlier production version to roll back to from version {production.version}"
        return None

    def _outcome(self, session: Session, run: ActionRun, verdict: str, what: str) -> tuple[str, str | None, str]:
        """What follows a verdict: (outcome, status of the follow-up rollback decision or None, reason)."""
        if verdict == Verdict.passed.value:
            return "none", None, ""
        spec = run.verification
        problem = self._rollback_problem(session, run)
        busy = [r for r in queries.in_flight_actions(session, run.model_id) if r.id != run.id]
        if verdict == Verdict.failed.value:
            if spec.get("otherwise") == "rollback" and problem is None and not busy:
                why = f"verification failed: {what}; it was false on the last evaluation; rolling back"
                return "rollback", DecisionStatus.proposed.value, why
            cause = ("otherwise: escalate" if spec.get("otherwise") == "escalate" else
                     problem or f"{', '.join(str(r) for r in busy)} in flight")
            why = f"verification failed: {what}; it was false on the last evaluation; a person decides ({cause})"
        else:
            why = (f"verification inconclusive: {what}; {spec.get('min_evaluations', 1)} successful evaluations "
                   f"needed; a person decides")
        if problem is not None:
            return "escalated", None, f"{why}; no rollback: {problem}"
        return "awaiting_approval", DecisionStatus.awaiting_approval.value, why

    def _conclude(self, session: Session, run: ActionRun, decision: Decision, model: ManagedModel | None,
                  context: dict[str, Any] | None, at: datetime, report: VerificationReport) -> None:
        spec = run.verification
        verdict = self._verdict(run)
        run.verdict = verdict
        run.verdict_at = at
        counts = {"true": run.verify_true, "false": run.verify_false, "errors": run.verify_errors}
        what = (f"{run.action} run {run.id} of policy {decision.policy_name}: expect `{spec['expect']}` over "
                f"{spec['within']} ({counts['true']} true, {counts['false']} false, {counts['errors']} errors)")
        outcome, status, why = self._outcome(session, run, verdict, what)
        follow_up: Decision | None = None
        model_name = model.name if model is not None else str(run.model_id)
        evidence = {
            "verification": {
                "run_id": run.id, "decision_id": decision.id, "action": run.action, "policy": decision.policy_name,
                "policy_sha256": spec.get("policy_sha256"), "expect": spec.get("expect"), "within": spec.get("within"),
                "min_evaluations": spec.get("min_evaluations"), "otherwise": spec.get("otherwise"),
                "verdict": verdict, **counts, "last_value": run.verify_last,
                "finished_at": ensure_utc(run.finished_at).isoformat() if run.finished_at else None,
                "verify_until": ensure_utc(run.verify_until).isoformat() if run.verify_until else None,
            },
            "context": context if context is not None else {},
        }
        if status is not None:
            expires_at = None
            timeout = parse_duration(spec.get("approval_timeout", "0s"))
            if status == DecisionStatus.awaiting_approval.value and timeout > timedelta(0):
                expires_at = at + timeout
            follow_up, created = queries.add_decision(session, Decision(
                created_at=at, tick_at=at, model_id=run.model_id, policy_name=decision.policy_name,
                policy_sha256=decision.policy_sha256, action=FOLLOW_UP_ACTION, params={}, evidence=evidence,
                status=status, reason=why, actor=self.actor, priority=decision.priority, expires_at=expires_at,
                dedup_key=f"{model_name}/{decision.policy_name}/verification/{run.id}", follows_run_id=run.id,
            ))
            if created:
                logger.info("%s for model %s: %s", follow_up, model_name, why)
        run.verification = {**spec, "outcome": {"verdict": verdict, "outcome": outcome, "reason": why or "as expected",
                                                "decision_id": follow_up.id if follow_up else None}}
        payload = {"run_id": run.id, "decision_id": decision.id, "model": model_name, "policy": decision.policy_name,
                   "expect": spec.get("expect"), "within": spec.get("within"), **counts, "outcome": outcome,
                   "follow_up_decision_id": follow_up.id if follow_up else None, "reason": why}
        audit.record(session, actor=self.actor, kind=f"verification.{verdict}", subject=str(run), payload=payload,
                     time=at)
        if verdict == Verdict.failed.value and outcome != "rollback":
            audit.record(session, actor=self.actor, kind="verification.escalated", subject=str(run), payload=payload,
                         time=at)
        (logger.info if verdict == Verdict.passed.value else logger.warning)(
            "%s on model %s: verification %s; %s", run, model_name, verdict, why or "as expected")
        assert run.id is not None
        report.verdicts.append(VerdictRecord(
            run_id=run.id, model=model_name, policy=decision.policy_name, action=run.action, verdict=verdict,
            true=counts["true"], false=counts["false"], errors=counts["errors"], outcome=outcome,
            decision_id=follow_up.id if follow_up else None))
