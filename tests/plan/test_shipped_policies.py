"""Every file shipped in ``policies/`` loads, the schema file is current, and the README documents the context."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import pytest

from knowledge import registry
from knowledge.database import session_scope
from mape.plan import CONTEXT_ROOTS, Planner, is_policy_file, load_policies, policy_json_schema
from mape.plan.policy import PolicySpec, policy_schema_text
from tests.plan.helpers import KNOWN_ACTIONS, add_model, observe, open_symptom

POLICIES = Path(__file__).resolve().parents[2] / "policies"
SHIPPED = sorted(p for p in POLICIES.iterdir() if is_policy_file(p))


def test_the_library_is_not_empty():
    assert {p.name for p in SHIPPED} >= {"retrain-on-drift.yaml", "rollback-on-regression.yaml"}


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_every_shipped_policy_loads_with_the_known_actions(path):
    result = load_policies(POLICIES, known_actions=KNOWN_ACTIONS)
    assert result.ok, "\n".join(str(e) for e in result.errors)
    assert str(path) in {p.source for p in result.policies}


def test_the_shipped_policies_say_what_the_readme_promises():
    policies = load_policies(POLICIES, known_actions=KNOWN_ACTIONS).by_name()
    retrain = policies["retrain-on-drift"].policy.spec
    assert (retrain.priority, retrain.action.type, retrain.action.params, retrain.mode, retrain.approval) == (
        50, "retrain", {"window": "4h"}, "enforce", "none")
    assert retrain.cooldown.total_seconds() == 6 * 3600
    rollback = policies["rollback-on-regression"].policy.spec
    assert (rollback.priority, rollback.action.type, rollback.cooldown.total_seconds()) == (90, "rollback", 6 * 3600)


def test_the_shipped_json_schema_is_the_one_the_models_generate():
    shipped = (POLICIES / "policy.schema.json").read_text(encoding="utf-8")
    assert shipped == policy_schema_text(), (
        "policies/policy.schema.json is stale; regenerate it with: python -c \"from mape.plan.policy import "
        "policy_schema_text; open('policies/policy.schema.json', 'w').write(policy_schema_text())\""
    )
    assert json.loads(shipped) == policy_json_schema()


def test_the_readme_documents_every_context_root_and_every_spec_field():
    readme = (POLICIES / "README.md").read_text(encoding="utf-8")
    for root in CONTEXT_ROOTS:
        assert f"`{root}`" in readme, f"policies/README.md does not document the context root {root!r}"
    for field_name, info in PolicySpec.model_fields.items():
        name = info.alias or field_name  # the key written in the file: `for`, not the attribute `for_`
        assert f"`spec.{name}" in readme, f"policies/README.md does not document spec.{name}"


def _shipped_planner() -> Planner:
    return Planner(load_policies(POLICIES, known_actions=KNOWN_ACTIONS).policies)


def test_lasting_drift_with_an_accuracy_drop_retrains_and_drift_alone_or_fresh_drift_does_not(engine, clock):
    began = clock()
    at = clock.advance(timedelta(hours=2, minutes=5))
    with session_scope(engine) as session:
        dropped = add_model(session, "dropped")
        steady = add_model(session, "steady")
        fresh = add_model(session, "fresh")
        for model, drop, opened in ((dropped, 0.05, began), (steady, 0.01, began), (fresh, 0.05, at)):
            open_symptom(session, model, "data_drift", opened)
            observe(session, model, at, drift__share_drifted=0.5, performance__accuracy_drop=drop)
        report = _shipped_planner().plan(session, [dropped, steady, fresh], at)
    assert [(d.policy_name, d.status, d.params) for d in report.decisions["dropped"]] == [
        ("retrain-on-drift", "proposed", {"window": "4h"})]
    assert report.decisions["steady"] == []
    # drift that has just begun: no post-drift labels to learn from yet
    assert report.decisions["fresh"] == []
    assert report.errors == []


def test_a_regression_right_after_a_promotion_rolls_back_before_retraining(engine, clock):
    with session_scope(engine) as session:
        model = add_model(session)
        v1 = registry.register_version(session, model_id=model.id, artifact_uri="file:///v1")
        registry.promote(session, v1, actor="test", at=clock())
        open_symptom(session, model, "data_drift", clock())
        v2 = registry.register_version(session, model_id=model.id, artifact_uri="file:///v2")
        registry.promote(session, v2, actor="test", at=clock.advance(timedelta(hours=2)))
        open_symptom(session, model, "performance_drop", clock())
        observe(session, model, clock.advance(timedelta(hours=1)), performance__accuracy_drop=0.08)
        report = _shipped_planner().plan(session, [model], clock())
        # seven hours after the promotion, a rollback is no longer the answer
        observe(session, model, clock.advance(timedelta(hours=6)), performance__accuracy_drop=0.08)
        stale = _shipped_planner().plan(session, [model], clock())
    assert [(d.policy_name, d.status) for d in report.decisions["m"]] == [
        ("rollback-on-regression", "proposed"), ("retrain-on-drift", "suppressed")]
    assert [(d.policy_name, d.status) for d in stale.decisions["m"]] == [("retrain-on-drift", "proposed")]


def test_a_symptom_left_open_by_the_previous_version_does_not_roll_the_new_one_back(engine, clock):
    with session_scope(engine) as session:
        model = add_model(session)
        v1 = registry.register_version(session, model_id=model.id, artifact_uri="file:///v1")
        registry.promote(session, v1, actor="test", at=clock())
        open_symptom(session, model, "performance_drop", clock())
        v2 = registry.register_version(session, model_id=model.id, artifact_uri="file:///v2")
        registry.promote(session, v2, actor="test", at=clock.advance(timedelta(hours=1)))
        # the new version's own accuracy is close to its baseline, or not measured yet
        observe(session, model, clock.advance(timedelta(hours=1)), performance__accuracy_drop=0.01)
        measured = _shipped_planner().plan(session, [model], clock())
        observe(session, model, clock.advance(timedelta(hours=1)), performance__accuracy_drop=None)
        unmeasured = _shipped_planner().plan(session, [model], clock())
    assert measured.decisions["m"] == []
    assert unmeasured.decisions["m"] == []
