"""``spec.alternatives``: the candidate with the highest utility is taken, and every candidate's score is recorded."""

from __future__ import annotations

from datetime import timedelta

import pytest

from knowledge.database import session_scope
from mape.config import Settings, Utility
from mape.plan import Planner
from tests.plan.helpers import add_model, make_policy, observe

KNOWN = frozenset({"retrain", "rollback", "rescale"})


def _policy(**spec):  # type: ignore[no-untyped-def]
    spec.setdefault("cooldown", 0)
    return make_policy(
        "choose", action="rescale", params={"replicas": 4}, known_actions=KNOWN,
        effects={"latency": 0.3, "cost": -0.2},
        alternatives=[
            {"action": {"type": "retrain", "params": {"window": "4h"}},
             "effects": {"accuracy": 0.05, "cost": -0.1, "gco2": -0.3}},
            {"action": {"type": "rollback"}, "effects": {"accuracy": 0.02},
             "when": "has(drift.share_drifted) && drift.share_drifted > 0.5"},
        ], **spec)


def test_the_highest_utility_wins_and_all_scores_are_recorded(engine, clock):
    utility = Utility(weights={"accuracy": 10, "latency": 1, "cost": 1, "gco2": 0.1})
    with session_scope(engine) as session:
        model = add_model(session)
        observe(session, model, clock(), drift__share_drifted=0.2)
        (decision,) = Planner([_policy()], utility=utility).plan(session, [model], clock()).decisions["m"]
    # rescale: 0.3 - 0.2 = 0.1; retrain: 10*0.05 - 0.1 - 0.03 = 0.37; rollback not eligible (drift 0.2)
    assert (decision.action, decision.params) == ("retrain", {"window": "4h"})
    candidates = decision.evidence["alternatives"]["candidates"]
    assert [(c["action"], c["utility"], c["eligible"], c.get("chosen", False)) for c in candidates] == [
        ("rescale", pytest.approx(0.1), True, False), ("retrain", pytest.approx(0.37), True, True),
        ("rollback", pytest.approx(0.2), False, False)]
    assert decision.evidence["alternatives"]["weights"]["accuracy"] == 10


def test_a_guard_that_holds_makes_an_alternative_eligible(engine, clock):
    utility = Utility(weights={"accuracy": 10, "latency": 1, "cost": 1})
    with session_scope(engine) as session:
        model = add_model(session)
        observe(session, model, clock(), drift__share_drifted=0.9)
        policy = _policy(utility={"accuracy": 100})  # the policy's own weights win over the settings'
        (decision,) = Planner([policy], utility=utility).plan(session, [model], clock()).decisions["m"]
    # own weights: rescale 0, retrain 5, rollback 2 (eligible now): retrain
    assert decision.action == "retrain"
    assert decision.evidence["alternatives"]["weights"] == {"accuracy": 100}


def test_with_equal_utilities_the_earlier_candidate_is_taken(engine, clock):
    with session_scope(engine) as session:
        model = add_model(session)
        (decision,) = Planner([_policy()], utility=Utility(weights={"gco2": 0})).plan(
            session, [model], clock()).decisions["m"]
    assert decision.action == "rescale"


def test_the_cooldown_is_the_chosen_actions(engine, clock):
    policy = _policy(cooldown="6h")
    utility = Utility(weights={"accuracy": 10, "latency": 1, "cost": 1})
    with session_scope(engine) as session:
        model = add_model(session)
        first = Planner([policy], utility=utility).plan(session, [model], clock()).decisions["m"][0]
        later = Planner([policy], utility=utility).plan(session, [model], clock.advance(timedelta(hours=1)))
    assert first.action == "retrain" and first.status == "proposed"
    (held,) = later.decisions["m"]
    assert held.status == "suppressed" and held.reason.startswith("cooldown: last retrain decision")


def test_an_alternative_guard_that_cannot_be_evaluated_is_not_eligible_and_reported(engine, clock):
    with session_scope(engine) as session:
        model = add_model(session)
        policy = make_policy("choose", action="rescale", known_actions=KNOWN, cooldown=0, effects={"latency": 0.1},
                             alternatives=[{"action": {"type": "rollback"}, "effects": {"accuracy": 1},
                                            "when": "drift.share_drifted > 0.5"}])
        report = Planner([policy]).plan(session, [model], clock())
    (decision,) = report.decisions["m"]
    assert decision.action == "rescale"
    assert any(e.field == "spec.alternatives[0].when" for e in report.errors)


def test_effects_and_weights_must_be_finite_and_name_known_dimensions():
    with pytest.raises(Exception, match="spec.alternatives"):
        make_policy("bad", known_actions=KNOWN, alternatives=[{"action": {"type": "rollback"},
                                                               "effects": {"happiness": 1}}])
    with pytest.raises(Exception, match="finite"):
        Utility(weights={"cost": float("nan")})
    assert Settings(plan={"utility": {"weights": {"accuracy": 2}}}).plan.utility.weights == {"accuracy": 2}


def test_alternatives_are_checked_at_load_naming_the_line_and_field():
    text = """\
apiVersion: mape/v1
kind: Policy
metadata: {name: choose}
spec:
  when: "true"
  action: {type: retrain}
  alternatives:
    - action: {type: rollbak}
    - action: {type: retrain}
      when: "drift.shar_drifted > 0.3"
"""
    from mape.plan import check_policy_text

    loaded, errors = check_policy_text(text, "choose.yaml", known_actions=KNOWN)
    assert loaded is None
    messages = [str(e) for e in errors]
    assert messages[0].startswith("choose.yaml:8:22: spec.alternatives[0].action.type: unknown action 'rollbak' "
                                  "(did you mean 'rollback'?)")
    assert messages[1].startswith("choose.yaml:10:20: spec.alternatives[1].when:") and "share_drifted" in messages[1]


def test_a_verify_expectation_is_checked_at_load():
    from mape.plan import check_policy_text
    from tests.plan.helpers import policy_text

    text = policy_text("v", verify={"expect": "performance.acuracy_drop < 0.01", "within": "3h"})
    loaded, errors = check_policy_text(text, "v.yaml", known_actions=KNOWN)
    assert loaded is None and "spec.verify.expect" in str(errors[0]) and "accuracy_drop" in str(errors[0])
