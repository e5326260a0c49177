"""The planner writes one decision per firing policy, with the status its mode and approval ask for."""

from __future__ import annotations

import json
from datetime import timedelta

from sqlmodel import select

from knowledge.database import session_scope
from knowledge.tables import Decision, PolicyVersion
from mape.plan import Planner
from tests.plan.helpers import add_model, make_policy, observe, open_symptom

DRIFTED = "'data_drift' in symptoms"


def _decisions(session) -> list[Decision]:
    return list(session.exec(select(Decision).order_by(Decision.id)))


def test_a_firing_policy_writes_a_proposed_decision_with_its_evidence(engine, clock):
    policy = make_policy("retrain-on-drift", when=DRIFTED + " && drift.share_drifted > 0.3", priority=50,
                         action="retrain", cooldown="6h")
    policy_with_params = make_policy("noop", when="false")
    at = clock()
    with session_scope(engine) as session:
        model = add_model(session, "fraud")
        observe(session, model, at, drift__share_drifted=0.4)
        open_symptom(session, model, "data_drift", at)
        report = Planner([policy, policy_with_params], actor="ctl-1").plan(session, [model], at)

    assert report.created == 1 and report.errors == []
    (decision,) = report.decisions["fraud"]
    assert report.acting() == [decision]
    with session_scope(engine) as session:
        (stored,) = _decisions(session)
        versions = list(session.exec(select(PolicyVersion)))
    assert stored.id == decision.id
    assert (stored.status, stored.action, stored.policy_name, stored.priority, stored.actor) == (
        "proposed", "retrain", "retrain-on-drift", 50, "ctl-1")
    assert stored.policy_sha256 == policy.sha256
    assert stored.tick_at == at and stored.created_at == at
    assert stored.dedup_key == f"{at.isoformat()}/fraud/retrain-on-drift"
    assert stored.evidence["when"] == policy.policy.spec.when
    assert stored.evidence["context"]["drift"] == {"share_drifted": 0.4}
    assert "data_drift" in stored.evidence["context"]["symptoms"]
    # the policy version that made the decision is stored once, by its hash
    assert [(v.name, v.sha256) for v in versions] == [("retrain-on-drift", policy.sha256)]


def test_action_params_are_copied_into_the_decision(engine, clock):
    policy = make_policy("p", action="retrain", params={"window": "4h"})
    with session_scope(engine) as session:
        model = add_model(session)
        report = Planner([policy]).plan(session, [model], clock())
    assert report.decisions["m"][0].params == {"window": "4h"}


def test_dry_run_records_without_acting_and_blocks_nothing(engine, clock):
    watch = make_policy("watch", mode="dry-run", priority=100)
    act = make_policy("act", priority=1)
    with session_scope(engine) as session:
        model = add_model(session)
        report = Planner([watch, act]).plan(session, [model], clock())
    statuses = [(d.policy_name, d.status) for d in report.decisions["m"]]
    assert statuses == [("watch", "dry_run"), ("act", "proposed")]


def test_approval_required_waits_for_a_person(engine, clock):
    policy = make_policy("careful", approval="required")
    with session_scope(engine) as session:
        model = add_model(session)
        report = Planner([policy]).plan(session, [model], clock())
    (decision,) = report.decisions["m"]
    assert decision.status == "awaiting_approval"
    assert report.acting() == [decision]


def test_a_policy_that_is_off_or_not_selecting_the_model_writes_nothing(engine, clock):
    off = make_policy("off", mode="off")
    other = make_policy("other", selector={"models": ["churn-*"]})
    labelled = make_policy("labelled", selector={"labels": {"team": "growth"}})
    with session_scope(engine) as session:
        model = add_model(session, "fraud", team="risk")
        report = Planner([off, other, labelled]).plan(session, [model], clock())
        assert _decisions(session) == []
    assert report.decisions == {"fraud": []} and report.errors == []


def test_unless_holds_the_policy_back(engine, clock):
    guarded = make_policy("guarded", when="true", unless="model.labels.frozen == 'yes'")
    with session_scope(engine) as session:
        frozen = add_model(session, "frozen", frozen="yes")
        thawed = add_model(session, "thawed", frozen="no")
        report = Planner([guarded]).plan(session, [frozen, thawed], clock())
    assert report.decisions["frozen"] == []
    assert [d.status for d in report.decisions["thawed"]] == ["proposed"]


def test_each_model_is_planned_on_its_own_context(engine, clock):
    policy = make_policy("drifted", when=DRIFTED)
    with session_scope(engine) as session:
        drifted = add_model(session, "a")
        calm = add_model(session, "b")
        open_symptom(session, drifted, "data_drift", clock())
        report = Planner([policy]).plan(session, [drifted, calm], clock.advance(timedelta(minutes=1)))
    assert [d.model_id for d in report.decisions["a"]] == [drifted.id]
    assert report.decisions["b"] == []


def test_the_report_summarises_as_json_with_errors_as_log_sentences(engine, clock):
    act = make_policy("act", action="retrain")
    missing = make_policy("missing", when="performance.accuracy < 0.8")
    with session_scope(engine) as session:
        model = add_model(session)
        report = Planner([act, missing]).plan(session, [model], clock())
    summary = report.as_dict()
    assert json.loads(json.dumps(summary)) == summary
    (decision,) = report.decisions["m"]
    assert summary["decisions"] == {"m": [{"id": decision.id, "policy": "act", "action": "retrain",
                                           "status": "proposed", "reason": ""}]}
    assert summary["errors"] == [str(report.errors[0])]
    assert summary["errors"][0].startswith("policy missing on model m: spec.when: signal not available")
    assert str(report) == f"plan at {clock().isoformat()}: 1 model, 1 proposed, 1 evaluation error"
