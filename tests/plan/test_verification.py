"""``spec.verify``: an action's expectation is judged over its bake time; fail rolls back, inconclusive asks."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlmodel import Session, select

from knowledge import queries, registry
from knowledge.database import session_scope
from knowledge.tables import ActionRun, AuditEvent, Decision, ManagedModel
from mape.errors import PolicyError
from mape.plan.verification import Verifier, block_reason
from tests.plan.helpers import add_model, make_policy, observe, open_symptom, policy_text

HOUR = timedelta(hours=1)
RECOVERED = "performance.accuracy_drop < 0.02"  # no has(): a missing signal is an error, not a failure


def _verify(**fields: Any) -> dict[str, Any]:
    return {"expect": RECOVERED, "within": "2h", **fields}


def _acted(session: Session, model: ManagedModel, at: datetime, *, verify: dict[str, Any] | None = None,
           name: str = "retrain-on-drop", promote: bool = True, earlier_version: bool = True,
           loadable: bool = True) -> ActionRun:
    """What the loop leaves after a policy's retrain succeeded at ``at``: its version, decision and run.

    ``promote``: the run put a new version in production (as a retrain whose candidate passed the gate);
    ``earlier_version``: there was a production version before it, to roll back to.
    """
    assert model.id is not None
    fields = {"when": "'performance_drop' in symptoms", "verify": verify or _verify()}
    # loadable=False: a version stored before the loader checked expectations (the verifier must cope)
    text = make_policy(name, **fields).text if loadable else policy_text(name, **fields)
    version = queries.record_policy_version(session, name=name, text=text)
    if earlier_version:
        v1 = registry.register_version(session, model_id=model.id, artifact_uri="v1")
        registry.promote(session, v1, actor="test", at=at - 24 * HOUR)
    decision = Decision(created_at=at, tick_at=at, model_id=model.id, policy_name=name, policy_sha256=version.sha256,
                        action="retrain", status="proposed", priority=7, dedup_key=f"{model.name}/{name}/{at}")
    session.add(decision)
    session.flush()
    run = ActionRun(decision_id=decision.id, model_id=model.id, action="retrain", state="succeeded",
                    idempotency_key=f"mape-decision-{decision.id}", created_at=at, started_at=at, finished_at=at,
                    updated_at=at)
    session.add(run)
    session.flush()
    if promote:
        v2 = registry.register_version(session, model_id=model.id, artifact_uri="v2", created_by_action_run_id=run.id)
        registry.promote(session, v2, actor="test", at=at)
    return run


def _events(session: Session, prefix: str = "verification.") -> list[AuditEvent]:
    return [e for e in session.exec(select(AuditEvent).order_by(AuditEvent.id)) if e.kind.startswith(prefix)]


def _follow_ups(session: Session) -> list[Decision]:
    return list(session.exec(select(Decision).where(Decision.follows_run_id.is_not(None)).order_by(Decision.id)))


def _counts(run: ActionRun) -> tuple[int, int, int]:
    return run.verify_true, run.verify_false, run.verify_errors


def test_a_change_that_reaches_the_expectation_by_the_end_of_the_bake_time_passes(engine, clock):
    verifier = Verifier()
    t0 = clock()
    with session_scope(engine) as session:
        model = add_model(session)
        run = _acted(session, model, t0)
        assert verifier.verify(session, t0).started == []  # not in the tick it finished in
        observe(session, model, t0 + HOUR, performance__accuracy_drop=0.05)  # not yet: labels are late
        first = verifier.verify(session, t0 + HOUR)
        assert first.started == [run.id] and first.verdicts == []
        assert (run.verdict, run.verify_until, _counts(run)) == ("pending", t0 + 2 * HOUR, (0, 1, 0))
        observe(session, model, t0 + 2 * HOUR, performance__accuracy_drop=0.01)
        (verdict,) = verifier.verify(session, t0 + 2 * HOUR).verdicts
        session.refresh(run)
        assert (verdict.verdict, verdict.outcome, verdict.decision_id) == ("pass", "none", None)
        assert (run.verdict, run.verdict_at, _counts(run), run.verify_last) == ("pass", t0 + 2 * HOUR, (1, 1, 0), True)
        assert run.verification["expect"] == RECOVERED and run.verification["outcome"]["verdict"] == "pass"
        assert [e.kind for e in _events(session)] == ["verification.pass"]
        assert _follow_ups(session) == []
        assert queries.verification_blocks(session, t0 + 3 * HOUR) == {}
        assert verifier.verify(session, t0 + 3 * HOUR).evaluated == 0  # a verdict is final


def test_a_failed_expectation_proposes_a_rollback_once_and_blocks_the_policy(engine, clock):
    verifier = Verifier(actor="ctl")
    t0 = clock()
    with session_scope(engine) as session:
        model = add_model(session)
        run = _acted(session, model, t0)
        observe(session, model, t0 + HOUR, performance__accuracy_drop=0.01)
        verifier.verify(session, t0 + HOUR)
        observe(session, model, t0 + 2 * HOUR, performance__accuracy_drop=0.06)
        (verdict,) = verifier.verify(session, t0 + 2 * HOUR).verdicts
        assert (verdict.verdict, verdict.outcome, verdict.true, verdict.false, verdict.errors) == (
            "fail", "rollback", 1, 1, 0)
        (rollback,) = _follow_ups(session)
        assert verdict.decision_id == rollback.id
        assert (rollback.action, rollback.status, rollback.policy_name, rollback.follows_run_id, rollback.tick_at,
                rollback.priority, rollback.actor) == ("rollback", "proposed", "retrain-on-drop", run.id, t0 + 2 * HOUR,
                                                       7, "ctl")
        assert rollback.reason.startswith(f"verification failed: retrain run {run.id} of policy retrain-on-drop")
        assert "false on the last evaluation; rolling back" in rollback.reason
        evidence = rollback.evidence["verification"]
        assert (evidence["true"], evidence["false"], evidence["errors"], evidence["verdict"]) == (1, 1, 0, "fail")
        assert rollback.evidence["context"]["performance"]["accuracy_drop"] == 0.06
        (event,) = _events(session)
        assert (event.kind, event.actor, event.payload["follow_up_decision_id"]) == ("verification.fail", "ctl",
                                                                                     rollback.id)
        # the rollback comes from the verdict, so it is not verified itself; the policy is blocked on the model
        blocks = queries.verification_blocks(session, t0 + 2 * HOUR)
        assert list(blocks) == [(model.id, "retrain-on-drop")] and blocks[model.id, "retrain-on-drop"].id == run.id
        assert block_reason(run).startswith(f"blocked: retrain run {run.id} ended fail at verification")

        # the same tick again, and later ticks: nothing is counted or written twice
        before = (_counts(run), len(_events(session)), len(_follow_ups(session)))
        assert verifier.verify(session, t0 + 2 * HOUR).evaluated == 0
        assert Verifier(actor="ctl").verify(session, t0 + 2 * HOUR).evaluated == 0  # a restarted controller too
        assert verifier.verify(session, t0 + 3 * HOUR).evaluated == 0
        session.refresh(run)
        assert (_counts(run), len(_events(session)), len(_follow_ups(session))) == before


def test_a_replayed_tick_inside_the_bake_time_counts_once(engine, clock):
    t0 = clock()
    with session_scope(engine) as session:
        model = add_model(session)
        run = _acted(session, model, t0, verify=_verify(within="3h"))
        observe(session, model, t0 + HOUR, performance__accuracy_drop=0.01)
        for verifier in (Verifier(), Verifier(), Verifier()):
            verifier.verify(session, t0 + HOUR)
        verifier.verify(session, t0 + HOUR - timedelta(minutes=1))  # an older tick, replayed late
        assert (run.verdict, _counts(run), run.last_verified_at) == ("pending", (1, 0, 0), t0 + HOUR)


def test_otherwise_escalate_asks_a_person_with_a_rollback_awaiting_approval(engine, clock):
    verifier = Verifier()
    t0 = clock()
    with session_scope(engine) as session:
        model = add_model(session)
        run = _acted(session, model, t0, verify=_verify(within="1h", otherwise="escalate"))
        observe(session, model, t0 + HOUR, performance__accuracy_drop=0.08)
        (verdict,) = verifier.verify(session, t0 + HOUR).verdicts
        (rollback,) = _follow_ups(session)
        assert (verdict.verdict, verdict.outcome) == ("fail", "awaiting_approval")
        assert (rollback.status, rollback.action, rollback.expires_at) == ("awaiting_approval", "rollback",
                                                                           t0 + HOUR + 24 * HOUR)
        assert "a person decides (otherwise: escalate)" in rollback.reason
        assert [e.kind for e in _events(session)] == ["verification.fail", "verification.escalated"]
        assert (model.id, "retrain-on-drop") in queries.verification_blocks(session, t0 + HOUR)
        assert run.verdict == "fail"


def test_a_signal_missing_throughout_is_inconclusive_with_errors_not_failures(engine, clock):
    verifier = Verifier(max_age=timedelta(minutes=30))
    t0 = clock()
    with session_scope(engine) as session:
        model = add_model(session)
        run = _acted(session, model, t0)
        observe(session, model, t0, performance__accuracy_drop=0.01)  # before the bake time, and stale after
        first = verifier.verify(session, t0 + HOUR)
        assert "counted as an error, not a failure" in first.errors[0]
        (verdict,) = verifier.verify(session, t0 + 2 * HOUR).verdicts
        assert (verdict.verdict, verdict.true, verdict.false, verdict.errors) == ("inconclusive", 0, 0, 2)
        assert (run.verdict, _counts(run), run.verify_last) == ("inconclusive", (0, 0, 2), None)
        assert run.verification["last"]["error"].startswith("signal not available")
        (rollback,) = _follow_ups(session)
        assert (rollback.status, rollback.action) == ("awaiting_approval", "rollback")
        assert rollback.reason.startswith("verification inconclusive:") and "a person decides" in rollback.reason
        assert [e.kind for e in _events(session)] == ["verification.inconclusive"]
        assert (model.id, "retrain-on-drop") in queries.verification_blocks(session, t0 + 2 * HOUR)


def test_fewer_successful_evaluations_than_min_evaluations_is_inconclusive(engine, clock):
    verifier = Verifier(max_age=timedelta(minutes=30))
    t0 = clock()
    with session_scope(engine) as session:
        model = add_model(session)
        run = _acted(session, model, t0, verify=_verify(within="3h", min_evaluations=3))
        observe(session, model, t0 + HOUR, performance__accuracy_drop=0.01)
        verifier.verify(session, t0 + HOUR)
        verifier.verify(session, t0 + 2 * HOUR)  # nothing measured: an error
        observe(session, model, t0 + 3 * HOUR, performance__accuracy_drop=0.01)
        (verdict,) = verifier.verify(session, t0 + 3 * HOUR).verdicts
        assert (verdict.verdict, _counts(run)) == ("inconclusive", (2, 0, 1))


def test_a_failure_with_no_earlier_version_to_return_to_is_escalated(engine, clock):
    verifier = Verifier()
    t0 = clock()
    with session_scope(engine) as session:
        model = add_model(session)
        run = _acted(session, model, t0, verify=_verify(within="1h"), earlier_version=False)
        observe(session, model, t0 + HOUR, performance__accuracy_drop=0.2)
        (verdict,) = verifier.verify(session, t0 + HOUR).verdicts
        assert (verdict.verdict, verdict.outcome, verdict.decision_id) == ("fail", "escalated", None)
        assert _follow_ups(session) == []
        fail, escalated = _events(session)
        assert (fail.kind, escalated.kind) == ("verification.fail", "verification.escalated")
        assert "no earlier production version to roll back to" in escalated.payload["reason"]
        assert run.verification["outcome"]["outcome"] == "escalated"


def test_a_change_that_did_not_reach_production_is_not_rolled_back(engine, clock):
    verifier = Verifier()
    t0 = clock()
    with session_scope(engine) as session:
        model = add_model(session)
        _acted(session, model, t0, verify=_verify(within="1h"), promote=False)  # the gate rejected the candidate
        observe(session, model, t0 + HOUR, performance__accuracy_drop=0.2)
        (verdict,) = verifier.verify(session, t0 + HOUR).verdicts
        assert (verdict.verdict, verdict.outcome) == ("fail", "escalated")
        assert _follow_ups(session) == []
        assert "did not put the version in production now (version 1) there" in _events(session)[-1].payload["reason"]


def test_a_failure_while_another_action_is_in_flight_waits_for_a_person(engine, clock):
    verifier = Verifier()
    t0 = clock()
    with session_scope(engine) as session:
        model = add_model(session)
        _acted(session, model, t0, verify=_verify(within="1h"))
        other = Decision(created_at=t0, model_id=model.id, policy_name="manual", action="retrain", status="approved",
                         dedup_key="m/manual")
        session.add(other)
        session.flush()
        session.add(ActionRun(decision_id=other.id, model_id=model.id, action="retrain", state="pending",
                              idempotency_key="other"))
        observe(session, model, t0 + HOUR, performance__accuracy_drop=0.2)
        (verdict,) = verifier.verify(session, t0 + HOUR).verdicts
        (rollback,) = _follow_ups(session)
        assert (verdict.outcome, rollback.status) == ("awaiting_approval", "awaiting_approval")
        assert "in flight" in rollback.reason


def test_only_runs_of_policy_versions_with_verify_are_verified_and_by_that_version(engine, clock):
    verifier = Verifier()
    t0 = clock()
    with session_scope(engine) as session:
        model = add_model(session)
        run = _acted(session, model, t0)
        # the policy is edited afterwards (verify removed): the run is judged by the version that made its decision
        queries.record_policy_version(session, name="retrain-on-drop", text=policy_text("retrain-on-drop"))
        plain = make_policy("plain")
        version = queries.record_policy_version(session, name="plain", text=plain.text)
        decision = Decision(created_at=t0, model_id=model.id, policy_name="plain", policy_sha256=version.sha256,
                            action="retrain", status="proposed", dedup_key="m/plain")
        session.add(decision)
        session.flush()
        unverified = ActionRun(decision_id=decision.id, model_id=model.id, action="retrain", state="succeeded",
                               idempotency_key="plain", started_at=t0, finished_at=t0)
        session.add(unverified)
        session.flush()
        observe(session, model, t0 + HOUR, performance__accuracy_drop=0.01)
        report = verifier.verify(session, t0 + HOUR)
        assert report.started == [run.id]
        assert (unverified.verdict, _counts(unverified)) == (None, (0, 0, 0))


def test_a_new_symptom_or_a_person_lifts_the_block(engine, clock):
    verifier = Verifier()
    t0 = clock()
    with session_scope(engine) as session:
        model = add_model(session)
        old = open_symptom(session, model, "performance_drop", t0 - HOUR)  # the symptom the change was for
        run = _acted(session, model, t0, verify=_verify(within="1h"))
        observe(session, model, t0 + HOUR, performance__accuracy_drop=0.2)
        verifier.verify(session, t0 + HOUR)
        assert (model.id, "retrain-on-drop") in queries.verification_blocks(session, t0 + 5 * HOUR)
        assert old.opened_at < t0

        open_symptom(session, model, "data_drift", t0 + 3 * HOUR)
        assert (model.id, "retrain-on-drop") in queries.verification_blocks(session, t0 + 2 * HOUR)  # not yet open
        assert queries.verification_blocks(session, t0 + 3 * HOUR) == {}

    with session_scope(engine) as session:
        other = add_model(session, "n")
        run2 = _acted(session, other, t0, verify=_verify(within="1h"))
        observe(session, other, t0 + HOUR, performance__accuracy_drop=0.2)
        Verifier().verify(session, t0 + HOUR)
        assert (other.id, "retrain-on-drop") in queries.verification_blocks(session, t0 + 2 * HOUR)
        assert queries.lift_verification_block(session, other.id, "other-policy", actor="alice", reason="x") == []
        lifted = queries.lift_verification_block(session, other.id, "retrain-on-drop", actor="alice",
                                                 reason="the labels were wrong", at=t0 + 2 * HOUR)
        assert [r.id for r in lifted] == [run2.id] and run2.block_lifted_by == "alice"
        assert (other.id, "retrain-on-drop") not in queries.verification_blocks(session, t0 + 2 * HOUR)
        assert (other.id, "retrain-on-drop") in queries.verification_blocks(session, t0 + HOUR)  # as it was then
        (event,) = _events(session, "verification.block_lifted")
        assert (event.actor, event.payload) == ("alice", {"runs": [run2.id], "reason": "the labels were wrong"})
        assert run.verdict == "fail"


def test_the_loader_accepts_verify_and_refuses_a_bad_one(tmp_path: Path):
    loaded = make_policy("checked", verify={"expect": RECOVERED, "within": "6h", "min_evaluations": 2,
                                            "otherwise": "escalate"})
    verify = loaded.policy.spec.verify
    assert verify is not None and (verify.within, verify.min_evaluations, verify.otherwise) == (
        6 * HOUR, 2, "escalate")
    with pytest.raises(PolicyError, match=r"spec\.verify\.within: must be longer than 0"):
        make_policy("zero", verify={"expect": RECOVERED, "within": 0})
    with pytest.raises(PolicyError, match=r"spec\.verify\.otherwise"):
        make_policy("what", verify={"expect": RECOVERED, "within": "1h", "otherwise": "retry"})
    with pytest.raises(PolicyError, match=r"spec\.verify\.min_evaluation: unknown field \(did you mean 'min_ev"):
        make_policy("typo", verify={"expect": RECOVERED, "within": "1h", "min_evaluation": 2})


def test_an_expectation_that_does_not_compile_is_refused_at_load_and_counts_errors_if_stored(engine, clock):
    with pytest.raises(PolicyError, match="spec.verify.expect: unknown field 'acuracy_drop'"):
        make_policy("typo", verify=_verify(expect="performance.acuracy_drop < 0.02"))
    verifier = Verifier()
    t0 = clock()
    with session_scope(engine) as session:
        model = add_model(session)
        run = _acted(session, model, t0, verify=_verify(expect="performance.acuracy_drop < 0.02", within="1h"),
                     loadable=False)
        observe(session, model, t0 + HOUR, performance__accuracy_drop=0.01)
        (verdict,) = verifier.verify(session, t0 + HOUR).verdicts
        assert (verdict.verdict, _counts(run)) == ("inconclusive", (0, 0, 1))
        assert "unknown field 'acuracy_drop'" in run.verification["last"]["error"]


# --------------------------------------------------------------------------- through the controller


FAILING_RETRAIN = """\
apiVersion: mape/v1
kind: Policy
metadata: {name: retrain-and-check}
spec:
  when: "has(drift.share_drifted)"
  action: {type: retrain, params: {window: 12h, min_train_rows: 100}}
  cooldown: 0s
  verify:
    expect: "drift.share_drifted < 0.0"
    within: 1h
"""


def _world(directory: Path, policies: Path, db_url: str):  # type: ignore[no-untyped-def]
    """tests.controller.world's credit world, with a promotion gate that lets any retrain through."""
    import yaml

    from examples.credit.demo import MODEL, Scenario, bootstrap, write_config
    from examples.credit.serving import CreditServing
    from mape.config import load_settings
    from mape.controller import Controller
    from tests.controller.world import World

    directory.mkdir(parents=True)
    scenario = Scenario(rows_per_hour=400, history_hours=12)
    config_path = write_config(directory, policies)
    data = yaml.safe_load(config_path.read_text())
    data["db_url"] = db_url
    data["models"][0]["promotion"]["margin"] = 1.0
    config_path.write_text(yaml.safe_dump(data, sort_keys=False))
    controller = Controller(load_settings(config_path))
    serving = CreditServing(directory / "data", controller.engine, MODEL, rows_per_hour=400, seed=scenario.seed)
    bootstrap(serving, controller.engine, Path(controller.settings.artifacts_dir), scenario)
    return World(directory, config_path, controller, serving, scenario)


def test_a_failed_verification_is_rolled_back_by_the_executor_in_the_same_tick(tmp_path: Path, db_url: str):
    policies = tmp_path / "policies"
    policies.mkdir()
    (policies / "retrain-and-check.yaml").write_text(FAILING_RETRAIN)
    world = _world(tmp_path / "world", policies, db_url)
    controller = world.controller
    world.serve_hour(1)
    first = controller.tick(world.scenario.at(1))
    (retrain,) = first.actions
    assert retrain.state == "succeeded" and retrain.result["promoted"] is True, retrain

    world.serve_hour(2)
    second = controller.tick(world.scenario.at(2))
    assert not second.errors, second.errors
    (verdict,) = second.verdicts
    assert (verdict.run_id, verdict.verdict, verdict.outcome) == (retrain.id, "fail", "rollback")
    statuses = {(d.action, d.status) for d in second.decisions}
    assert ("rollback", "proposed") in statuses
    # the retrain policy still fires, but the verification's rollback holds the model's one slot in this tick
    assert not {("retrain", "proposed"), ("retrain", "awaiting_approval")} & statuses
    (rollback,) = second.actions
    assert (rollback.action, rollback.state) == ("rollback", "succeeded")
    assert rollback.result == {"from_version": retrain.result["version"], "to_version": 1}
    with session_scope(controller.engine) as session:
        model = session.exec(select(ManagedModel)).one()
        assert registry.production_version(session, model.id).version == 1
        run = session.get(ActionRun, retrain.id)
        assert (run.verdict, run.verify_false) == ("fail", 1)
        assert (model.id, "retrain-and-check") in queries.verification_blocks(session, world.scenario.at(2))
