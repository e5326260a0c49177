"""``explain_decision``: why a decision was taken or held back, from the knowledge base alone."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

from sqlmodel import select

from knowledge import registry
from knowledge.database import session_scope
from knowledge.tables import ActionRun, Decision
from mape.plan import Planner, load_policies
from mape.plan.explain import explain_decision, format_path, referenced_paths, split_terms
from tests.plan.helpers import KNOWN_ACTIONS, add_model, make_policy, observe, open_symptom

POLICIES = Path(__file__).resolve().parents[2] / "policies"


def _shipped():
    return load_policies(POLICIES, known_actions=KNOWN_ACTIONS).by_name()


def test_a_proposed_retrain_names_policy_version_conditions_and_the_evidence_they_read(engine, clock):
    retrain = _shipped()["retrain-on-drift"]
    began = clock()
    at = clock.advance(timedelta(hours=2, minutes=30))
    with session_scope(engine) as session:
        model = add_model(session, "credit-risk", team="risk")
        open_symptom(session, model, "data_drift", began)
        observe(session, model, at, drift__share_drifted=0.5, performance__accuracy_drop=0.05)
        [decision] = Planner([retrain]).plan(session, [model], at).decisions["credit-risk"]
    with session_scope(engine) as session:
        explanation = explain_decision(session, decision.id)
    assert explanation is not None
    assert (explanation.model, explanation.policy, explanation.action, explanation.status) == (
        "credit-risk", "retrain-on-drift", "retrain", "proposed")
    assert explanation.params == {"window": "4h"} and explanation.priority == 50
    assert explanation.policy_sha256 == retrain.sha256
    assert explanation.policy_text == retrain.text
    assert explanation.policy_source == str(POLICIES / "retrain-on-drift.yaml")
    assert explanation.when == retrain.policy.spec.when and explanation.unless == retrain.policy.spec.unless
    assert explanation.unless_value is False
    assert explanation.when_value is True
    assert [(t.expression, t.value) for t in explanation.when_terms] == [
        ("'data_drift' in symptoms", True),
        ("symptoms.data_drift.age_seconds >= 7200", True),
        ("has(performance.accuracy_drop)", True),
        ("performance.accuracy_drop > 0.03", True),
    ]
    assert [(e.path, e.present, e.value) for e in explanation.evidence] == [
        ("symptoms.data_drift", True, {"severity": "warning", "opened_at": began.isoformat(), "age_seconds": 9000.0}),
        ("symptoms.data_drift.age_seconds", True, 9000.0),
        ("performance.accuracy_drop", True, 0.05),
        ("symptoms.schema_change", False, None),  # read by the unless: the data is whole
        ("symptoms.null_spike", False, None),
    ]
    assert explanation.action_run is None and explanation.same_tick == []
    text = str(explanation)
    assert f"decision {decision.id}: retrain-on-drift -> retrain on model credit-risk: proposed" in text
    assert f"version sha256 {retrain.sha256}" in text
    assert "true   symptoms.data_drift.age_seconds >= 7200" in text
    assert "performance.accuracy_drop = 0.05" in text
    assert "  |   name: retrain-on-drift" in text  # the stored policy text


def test_a_suppressed_decision_says_why_and_who_won_and_the_action_run_shows_its_result(engine, clock):
    policies = _shipped()
    with session_scope(engine) as session:
        model = add_model(session)
        v1 = registry.register_version(session, model_id=model.id, artifact_uri="file:///v1")
        registry.promote(session, v1, actor="test", at=clock())
        v2 = registry.register_version(session, model_id=model.id, artifact_uri="file:///v2")
        registry.promote(session, v2, actor="test", at=clock.advance(timedelta(hours=3)))
        open_symptom(session, model, "data_drift", clock() - timedelta(hours=3))
        open_symptom(session, model, "performance_drop", clock())
        at = clock.advance(timedelta(hours=1))
        observe(session, model, at, performance__accuracy_drop=0.08)
        planner = Planner([policies["rollback-on-regression"], policies["retrain-on-drift"]])
        rollback, retrain = planner.plan(session, [model], at).decisions["m"]
        session.add(ActionRun(decision_id=rollback.id, model_id=model.id, action="rollback", state="succeeded",
                              attempts=1, idempotency_key=f"mape-decision-{rollback.id}",
                              result={"to_version": 1}, message="rolled back to version 1"))
    with session_scope(engine) as session:
        held = explain_decision(session, retrain.id)
        acted = explain_decision(session, rollback.id)
    assert held is not None and acted is not None
    assert held.status == "suppressed" and held.reason.startswith("outranked: policy rollback-on-regression")
    assert held.same_tick == [{"id": rollback.id, "policy": "rollback-on-regression", "action": "rollback",
                               "status": "proposed", "reason": ""}]
    assert held.action_run is None
    assert acted.action_run is not None
    assert (acted.action_run["state"], acted.action_run["attempts"], acted.action_run["result"]) == (
        "succeeded", 1, {"to_version": 1})
    assert {e.path: e.value for e in acted.evidence} == {
        "symptoms.performance_drop": {"severity": "warning", "opened_at": (at - timedelta(hours=1)).isoformat(),
                                      "age_seconds": 3600.0},
        "performance.accuracy_drop": 0.08,
        "model.production_age_seconds": 3600.0,
        "model.can_roll_back": True,
    }
    text = str(acted)
    assert "action run" in text and "rollback succeeded, 1 attempt" in text
    assert "message: rolled back to version 1" in text and '"to_version": 1' in text
    assert f"decision {rollback.id}: rollback-on-regression -> rollback (proposed)" in str(held)


def test_unless_conditions_and_absent_signals_are_shown_as_evaluated(engine, clock):
    policy = make_policy("guarded", when="has(performance.f1) || drift.share_drifted > 0.3",
                         unless="'frozen' in model.labels && model.labels.frozen == 'yes'")
    with session_scope(engine) as session:
        model = add_model(session, "m", frozen="no")
        observe(session, model, clock(), drift__share_drifted=0.4)
        [decision] = Planner([policy]).plan(session, [model], clock()).decisions["m"]
        explanation = explain_decision(session, decision.id)
    assert explanation is not None
    assert explanation.when_value is True and explanation.unless_value is False
    # a top-level || is one term: splitting it would misstate what held
    assert [(t.expression, t.value) for t in explanation.when_terms] == [
        ("has(performance.f1) || drift.share_drifted > 0.3", True)]
    assert [(t.expression, t.value) for t in explanation.unless_terms] == [
        ("'frozen' in model.labels", True), ("model.labels.frozen == 'yes'", False)]
    assert [str(e) for e in explanation.evidence] == [
        "performance.f1 = absent", "drift.share_drifted = 0.4", "model.labels.frozen = \"no\""]
    assert json.loads(json.dumps(explanation.as_dict()))["evidence"][0] == {
        "path": "performance.f1", "present": False, "value": None}


def test_a_requested_decision_has_no_conditions_and_an_unknown_id_is_none(engine, clock):
    with session_scope(engine) as session:
        model = add_model(session)
        session.add(Decision(created_at=clock(), model_id=model.id, policy_name="manual", action="retrain",
                             evidence={"requested_by": "alice", "reason": "fresh data"}, status="approved",
                             reason="fresh data", actor="alice", decided_by="alice", decided_at=clock(),
                             dedup_key="m/manual/alice"))
    with session_scope(engine) as session:
        decision = session.exec(select(Decision)).one()
        explanation = explain_decision(session, decision.id)
        assert explain_decision(session, decision.id + 100) is None
    assert explanation is not None
    assert (explanation.when, explanation.when_terms, explanation.evidence, explanation.policy_text) == (
        None, [], [], None)
    data = explanation.as_dict()
    assert data["decided_by"] == "alice" and data["created_at"] == clock().isoformat()
    assert "when: none stored" in str(explanation) and "approved or rejected by alice" in str(explanation)


def test_referenced_paths_skip_string_literals_and_cut_method_calls():
    paths = referenced_paths("model.name.startsWith('drift.share_drifted') && 'performance' in model.labels"
                             " && since_last.retrain > 60.0 && size(symptoms) > 0")
    assert [format_path(p) for p in paths] == [
        "model.name", "model.labels.performance", "since_last.retrain", "symptoms"]
    assert split_terms("  a.b > 1  ") == ["a.b > 1"]
    assert split_terms("a.b ? c.d : e.f && g.h") == ["a.b ? c.d : e.f && g.h"]
