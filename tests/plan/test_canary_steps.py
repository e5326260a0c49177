"""A canary's steps are judged by the policy's ``verify`` over each step's bake time, on the candidate's own scores."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlmodel import Session, select

from knowledge import queries, registry
from knowledge.database import session_scope
from knowledge.tables import ActionRun, AuditEvent, Canary, Decision, ManagedModel
from mape.plan import Planner
from mape.plan.verification import Verifier
from tests.plan.helpers import add_model, make_policy, observe

HOUR = timedelta(hours=1)
EXPECT = "performance.accuracy >= baseline.accuracy - 0.05"


def _canary(session: Session, model: ManagedModel, at: datetime, *, verify: dict[str, Any] | None = None,
            policy: str | None = "retrain-canary", steps: tuple[float, ...] = (0.1, 0.5)) -> tuple[Canary, ActionRun]:
    """What ``retrain`` leaves when it started a canary at ``at``: v1 in production, v2 serving the first step."""
    assert model.id is not None
    sha = None
    if policy is not None:
        loaded = make_policy(policy, params={"canary": {"steps": list(steps), "bake": "1h"}},
                             verify=verify or {"expect": EXPECT, "within": "2h"})
        sha = queries.record_policy_version(session, name=loaded.name, text=loaded.text).sha256
    v1 = registry.register_version(session, model_id=model.id, artifact_uri="v1", metrics={"accuracy": 0.70})
    registry.promote(session, v1, actor="test", at=at - 24 * HOUR)
    decision = Decision(created_at=at, tick_at=at, model_id=model.id, policy_name=policy or "manual",
                        policy_sha256=sha, action="retrain", status="proposed", dedup_key=f"{model.name}/{at}")
    session.add(decision)
    session.flush()
    run = ActionRun(decision_id=decision.id, model_id=model.id, action="retrain", state="succeeded",
                    idempotency_key=f"mape-decision-{decision.id}", created_at=at, started_at=at, finished_at=at,
                    updated_at=at)
    session.add(run)
    session.flush()
    v2 = registry.register_version(session, model_id=model.id, artifact_uri="v2", metrics={"accuracy": 0.92},
                                   created_by_action_run_id=run.id)
    registry.start_canary(session, v2, actor="test", reason="gate passed", at=at)
    canary = Canary(action_run_id=run.id, model_id=model.id, version_id=v2.id, champion_version_id=v1.id,
                    target="local", steps=[{"share": s, "bake": "1h"} for s in steps], share=steps[0], replicas=1,
                    stable_replicas=9, step_started_at=at, step_until=at + HOUR, created_at=at, updated_at=at)
    session.add(canary)
    session.flush()
    return canary, run


def _scores(session: Session, model: ManagedModel, at: datetime, accuracy: float | None, *, version: float = 2.0,
            production: float = 0.70) -> None:
    """The Monitor's readings at ``at``: production's accuracy, and the canary's candidate's."""
    observe(session, model, at, performance__accuracy=production, canary__accuracy=accuracy, canary__version=version)


def test_a_step_passes_when_the_candidates_own_accuracy_holds_at_the_end_of_its_bake_time(engine, clock):
    t0 = clock()
    with session_scope(engine) as session:
        model = add_model(session)
        canary, run = _canary(session, model, t0)
        assert Verifier().verify(session, t0).evaluated == 0  # judged from the tick after the step started
        _scores(session, model, t0 + HOUR / 2, 0.80)  # below 0.92 - 0.05: not yet
        first = Verifier().verify(session, t0 + HOUR / 2)
        assert (first.evaluated, first.canary_steps) == (1, [])
        assert (canary.verify_true, canary.verify_false, canary.step_verdict) == (0, 1, None)
        # production's accuracy (0.70) would fail the expectation: the canary is judged on its own scores
        _scores(session, model, t0 + HOUR, 0.90)
        report = Verifier().verify(session, t0 + HOUR)
        session.refresh(canary)
        assert (canary.verify_true, canary.verify_false, canary.step_verdict) == (1, 1, "pass")
        (step,) = report.canary_steps
        assert "canary step 1 of 2 (10% of the replicas, 1 beside 9) of version 2" in step and step.endswith(": pass")
        assert report.verdicts == [] and run.verdict is None  # the run's change is not in production yet
        assert canary.history[0]["verdict"] == "pass" and canary.history[0]["expect"] == EXPECT
        # the verdict waits for the Execute stage; later passes leave the step alone
        assert Verifier().verify(session, t0 + 2 * HOUR).evaluated == 0
        kinds = [e.kind for e in session.exec(select(AuditEvent)) if e.kind.startswith("canary.")]
        assert kinds == ["canary.step_pass"]


def test_a_replayed_tick_counts_once(engine, clock):
    t0 = clock()
    with session_scope(engine) as session:
        model = add_model(session)
        canary, _ = _canary(session, model, t0)
        _scores(session, model, t0 + HOUR / 2, 0.91)
        for verifier in (Verifier(), Verifier()):
            verifier.verify(session, t0 + HOUR / 2)
        Verifier().verify(session, t0 + HOUR / 4)  # an older tick, replayed late
        session.refresh(canary)
        assert (canary.verify_true, canary.verify_false, canary.verify_errors) == (1, 0, 0)


def test_a_failed_step_is_the_runs_verdict_blocks_the_policy_and_proposes_no_rollback(engine, clock):
    t0 = clock()
    with session_scope(engine) as session:
        model = add_model(session)
        canary, run = _canary(session, model, t0)
        _scores(session, model, t0 + HOUR, 0.60)
        report = Verifier(actor="ctl").verify(session, t0 + HOUR)
        session.refresh(run)
        (verdict,) = report.verdicts
        assert (verdict.run_id, verdict.verdict, verdict.outcome, verdict.decision_id) == (run.id, "fail",
                                                                                           "canary_aborted", None)
        assert (canary.step_verdict, run.verdict, run.verdict_at) == ("fail", "fail", t0 + HOUR)
        assert run.verification["outcome"]["outcome"] == "canary_aborted"
        assert "production stays as it is" in run.verification["outcome"]["reason"]
        assert list(queries.verification_blocks(session, t0 + HOUR)) == [(model.id, "retrain-canary")]
        assert session.exec(select(Decision).where(Decision.follows_run_id == run.id)).first() is None
        events = [(e.kind, e.actor) for e in session.exec(select(AuditEvent).order_by(AuditEvent.id))
                  if e.kind.startswith(("canary.step", "verification."))]
        assert events == [("canary.step_fail", "ctl"), ("verification.fail", "ctl")]


def test_missing_or_foreign_scores_are_errors_never_failures_and_too_few_make_it_inconclusive(engine, clock):
    t0 = clock()
    with session_scope(engine) as session:
        model = add_model(session)
        canary, run = _canary(session, model, t0, verify={"expect": EXPECT, "within": "2h", "min_evaluations": 2})
        _scores(session, model, t0 + HOUR / 3, 0.10, version=1.0)  # another version's scores: not the candidate's
        foreign = Verifier().verify(session, t0 + HOUR / 3)
        (error,) = foreign.errors
        assert "unknown" in error.lower() or "no such" in error.lower() or "accuracy" in error
        assert error.endswith("counted as an error, not a failure")
        observe(session, model, t0 + 2 * HOUR / 3, performance__accuracy=0.70)  # no canary scores at all
        Verifier().verify(session, t0 + 2 * HOUR / 3)
        _scores(session, model, t0 + HOUR, 0.93)
        report = Verifier().verify(session, t0 + HOUR)
        session.refresh(run)
        assert (canary.verify_true, canary.verify_false, canary.verify_errors) == (1, 0, 2)
        assert (canary.step_verdict, run.verdict) == ("inconclusive", "inconclusive")
        assert [v.outcome for v in report.verdicts] == ["canary_aborted"] and report.errors == []


def test_a_canary_no_policy_decided_passes_each_step_on_its_bake_time(engine, clock):
    t0 = clock()
    with session_scope(engine) as session:
        model = add_model(session)
        canary, _ = _canary(session, model, t0, policy=None)  # a person's request: no verify
        assert Verifier().verify(session, t0 + HOUR / 2).canary_steps == []
        (step,) = Verifier().verify(session, t0 + HOUR).canary_steps
        assert canary.step_verdict == "pass" and "no verify expectation" in step


def test_a_running_canary_keeps_its_model_busy_for_the_planner(engine, clock):
    t0 = clock()
    policy = make_policy("retrain-always", action="retrain", cooldown=0)
    with session_scope(engine) as session:
        model = add_model(session)
        canary, run = _canary(session, model, t0)
        (decision,) = Planner([policy]).plan(session, [model], t0 + HOUR / 2).decisions["m"]
        assert decision.status == "suppressed"
        assert decision.reason == (f"busy: canary {canary.id} of retrain run {run.id} (step 1 of 2, 10% of the "
                                   f"replicas) in flight for model m")
        canary.state = "promoted"
        session.add(canary)
        session.flush()
        (decision,) = Planner([policy]).plan(session, [model], t0 + HOUR).decisions["m"]
        assert decision.status == "proposed"
