"""Conditions evaluate to booleans or fail with a reason; selectors match names by glob and labels exactly."""

from __future__ import annotations

import pytest

from knowledge.tables import ManagedModel
from mape.plan import Condition, ConditionError
from mape.plan.planner import selects
from tests.plan.helpers import make_policy


def test_a_condition_is_true_or_false_over_the_context():
    condition = Condition("'data_drift' in symptoms && performance.accuracy_drop > 0.03")
    context = {"symptoms": {"data_drift": {"severity": "warning"}}, "performance": {"accuracy_drop": 0.05}}
    assert condition.evaluate(context) is True
    assert condition.evaluate({**context, "symptoms": {}}) is False


def test_a_missing_signal_is_a_missing_error_not_false():
    condition = Condition("performance.accuracy_drop > 0.03")
    with pytest.raises(ConditionError) as info:
        condition.evaluate({"performance": {}})
    assert info.value.missing
    assert "accuracy_drop" in str(info.value)


def test_has_guards_a_missing_signal():
    assert Condition("has(performance.accuracy_drop) && performance.accuracy_drop > 0.03").evaluate(
        {"performance": {}}) is False


def test_a_type_error_is_an_error_but_not_a_missing_signal():
    with pytest.raises(ConditionError) as info:
        Condition("model.labels.team > 3").evaluate({"model": {"labels": {"team": "risk"}}})
    assert not info.value.missing
    assert "type error" in str(info.value)


def test_a_non_boolean_result_is_an_error():
    with pytest.raises(ConditionError, match="must be true or false; got float 0.5"):
        Condition("drift.share_drifted").evaluate({"drift": {"share_drifted": 0.5}})


def test_doubles_compare_with_integers():
    assert Condition("drift.n_drifted >= 2 && drift.share_drifted > 0").evaluate(
        {"drift": {"n_drifted": 3, "share_drifted": 0.25}}) is True


def _model(name: str, **labels: str) -> ManagedModel:
    return ManagedModel(name=name, labels=labels)


def test_the_default_selector_matches_every_model():
    assert selects(make_policy("all"), _model("anything", team="x"))


@pytest.mark.parametrize(
    ("patterns", "name", "expected"),
    [(["fraud-*"], "fraud-eu", True), (["fraud-*"], "churn", False), (["churn", "fraud-?"], "fraud-1", True),
     (["fraud-*"], "Fraud-eu", False)],
)
def test_model_globs(patterns, name, expected):
    policy = make_policy("globs", selector={"models": patterns})
    assert selects(policy, _model(name)) is expected


def test_every_selector_label_must_match_exactly():
    policy = make_policy("labels", selector={"labels": {"team": "risk", "tier": "1"}})
    assert selects(policy, _model("m", team="risk", tier="1", extra="y"))
    assert not selects(policy, _model("m", team="risk"))
    assert not selects(policy, _model("m", team="risk", tier="2"))


def test_globs_and_labels_must_both_match():
    policy = make_policy("both", selector={"models": ["fraud-*"], "labels": {"team": "risk"}})
    assert selects(policy, _model("fraud-eu", team="risk"))
    assert not selects(policy, _model("churn", team="risk"))
    assert not selects(policy, _model("fraud-eu", team="growth"))
