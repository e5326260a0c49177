"""The demo scenario, end to end through Prefect: the decision trail in the knowledge base proves the loop closed."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from sqlmodel import col, select

from examples.credit.demo import MODEL, Scenario, create_engine
from examples.credit.serving import FEATURES
from examples.credit.stream import generate
from knowledge import queries, registry
from knowledge.database import session_scope
from knowledge.tables import ActionRun, Decision, ModelVersion, Observation, PolicyVersion, Symptom
from mape.access import Role, UsersFile
from mape.execute.training import load_artifact

pytestmark = pytest.mark.slow


def test_the_demo_reports_a_closed_loop(demo_run):
    ok, lines, _ = demo_run
    text = "\n".join(lines)
    assert ok, text
    assert "PROMOTED" in text and "REJECTED" in text
    assert "the loop closed" in text


def test_the_demo_ends_by_saying_how_to_open_the_dashboard_and_sign_in(demo_run):
    _, lines, directory = demo_run
    dashboard = next(i for i, line in enumerate(lines) if line.startswith("dashboard:"))
    assert f"dashboard --config {directory / 'mape.yaml'}" in lines[dashboard]
    password = lines[dashboard + 1].rsplit("password ", 1)[1]
    assert "http://127.0.0.1:8501" in lines[dashboard + 1] and "sign in as demo" in lines[dashboard + 1]
    identity = UsersFile(directory / "users.yaml").authenticate("demo", password)
    assert identity is not None and identity.role is Role.admin


def test_the_demo_leaves_one_request_waiting_for_an_approver_and_says_where(demo_run):
    _, lines, directory = demo_run
    engine = create_engine(directory)
    with session_scope(engine) as session:
        waiting = session.exec(select(Decision).where(Decision.status == "awaiting_approval")).all()
    engine.dispose()
    assert [(d.action, d.actor, d.params) for d in waiting] == [("retrain", "bob@example.com", {"window": "24h"})]
    assert any(f"decision {waiting[0].id} waits on its Approvals page" in line for line in lines)


def test_drift_is_observed_at_or_after_the_onset_and_not_before(demo_run):
    _, _, directory = demo_run
    scenario = Scenario()
    engine = create_engine(directory)
    with session_scope(engine) as session:
        model = registry.get_model(session, MODEL)
        symptoms = session.exec(select(Symptom).where(Symptom.model_id == model.id, Symptom.kind == "data_drift")).all()
        detected = session.exec(select(Observation).where(
            Observation.model_id == model.id, Observation.metric == "drift.share_drifted",
            col(Observation.value) >= 0.3)).all()
    assert symptoms, "no data_drift symptom"
    assert all(s.opened_at >= scenario.at(scenario.onset) for s in symptoms)
    assert min(o.time for o in detected) >= scenario.at(scenario.onset)


def test_the_retrain_decision_names_its_policy_version_and_evidence_and_its_run_succeeded(demo_run):
    _, _, directory = demo_run
    engine = create_engine(directory)
    with session_scope(engine) as session:
        decision = session.exec(select(Decision).where(Decision.policy_name == "retrain-on-drift",
                                                       Decision.status == "proposed")).first()
        assert decision is not None
        version = session.exec(select(PolicyVersion).where(PolicyVersion.sha256 == decision.policy_sha256)).one()
        assert version.name == "retrain-on-drift" and "retrain" in version.text
        evidence = str(decision.evidence)
        assert "data_drift" in evidence and "share_drifted" in evidence
        run = session.exec(select(ActionRun).where(ActionRun.decision_id == decision.id)).one()
        assert run.state == "succeeded" and run.result["promoted"] is True
        assert run.flow_run_id, "the action ran as a Prefect flow run"


def test_the_promoted_version_beats_the_old_one_on_post_drift_data_and_accuracy_recovers(demo_run):
    _, _, directory = demo_run
    scenario = Scenario()
    engine = create_engine(directory)
    with session_scope(engine) as session:
        model = registry.get_model(session, MODEL)
        versions = {v.version: v for v in registry.versions(session, model.id)}
        promoted = [v for v in versions.values() if v.version > 1 and v.promoted_at is not None]
        # the last three hours, after the labelling incident (hours 24-27, measured until hour 29) is over
        late = queries.observations_between(session, model.id, scenario.at(scenario.ticks - 2),
                                            scenario.at(scenario.ticks), metrics=["performance.accuracy"])
        production = registry.production_version(session, model.id)
    assert promoted
    fresh = generate(5000, drifted=True, rng=np.random.default_rng(99))
    truth = fresh["label"].to_numpy()
    old = np.mean(load_artifact(versions[1].artifact_uri).predict(fresh[FEATURES]) == truth)
    new = np.mean(load_artifact(promoted[0].artifact_uri).predict(fresh[FEATURES]) == truth)
    assert new > old + 0.1
    assert production.version == 1  # rolled back when the downturn ended (below)
    assert len(late) == 3 and min(o.value for o in late) > 0.85


def test_the_retrain_fails_its_verification_when_the_downturn_ends_and_is_rolled_back(demo_run):
    _, lines, directory = demo_run
    scenario = Scenario()
    engine = create_engine(directory)
    with session_scope(engine) as session:
        retrain = session.exec(select(ActionRun).where(ActionRun.action == "retrain")
                               .order_by(ActionRun.id)).first()
        follow_up = session.exec(select(Decision).where(Decision.follows_run_id == retrain.id)).one()
        rollback = session.exec(select(ActionRun).where(ActionRun.decision_id == follow_up.id)).one()
        blocked = session.exec(select(Decision).where(Decision.policy_name == "retrain-on-drift",
                                                      Decision.status == "suppressed")).all()
    assert retrain.result["promoted"] is True
    assert retrain.verdict == "fail" and retrain.verify_false >= 2
    assert scenario.at(scenario.recovery) <= retrain.verdict_at <= scenario.at(scenario.recovery + 4)
    assert follow_up.policy_name == "retrain-on-drift" and follow_up.action == "rollback"
    assert "verification failed" in follow_up.reason
    assert rollback.state == "succeeded" and rollback.result == {"from_version": 2, "to_version": 1}
    # the policy does not retrain again on the symptom that was open when its change failed
    assert any("blocked" in d.reason for d in blocked)
    assert any("rollback run" in line and "succeeded" in line for line in lines)


def test_the_candidate_trained_on_corrupted_labels_never_serves(demo_run):
    _, _, directory = demo_run
    engine = create_engine(directory)
    with session_scope(engine) as session:
        manual = session.exec(select(Decision).where(Decision.policy_name == "manual",  # alice's, not bob's waiting one
                                                     Decision.actor == "alice@example.com")).one()
        run = session.exec(select(ActionRun).where(ActionRun.decision_id == manual.id)).one()
        bad = session.exec(select(ModelVersion).where(ModelVersion.version == run.result["version"])).one()
    assert run.state == "succeeded" and run.result["promoted"] is False
    assert bad.stage == "rejected" and bad.promoted_at is None
    assert bad.evaluation["candidate"]["accuracy"] < bad.evaluation["champion"]["accuracy"]
