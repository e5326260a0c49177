"""Policies that can fight are found: same models, conflicting actions, no priority between them; others are not."""

from __future__ import annotations

from fnmatch import fnmatchcase
from itertools import product

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mape.plan.overlap import CONFLICTING_ACTIONS, find_overlaps, glob_intersection
from tests.plan.helpers import make_policy

ACTIONS = frozenset({"retrain", "rollback", "notify", "scale-up", "scale-down", "open-gate", "close-gate"})


def _policy(name: str, action: str, *, models: list[str] | None = None, labels: dict[str, str] | None = None,
            priority: int = 0, params: dict | None = None, **spec: object):
    selector: dict[str, object] = {}
    if models is not None:
        selector["models"] = models
    if labels is not None:
        selector["labels"] = labels
    return make_policy(name, action=action, params=params, priority=priority, known_actions=ACTIONS,
                       **({"selector": selector} if selector else {}), **spec)


def _pairs(*policies, **kwargs) -> list[tuple[str, str]]:
    return [(o.first.name, o.second.name) for o in find_overlaps(policies, **kwargs)]


def test_retrain_and_rollback_for_every_model_at_equal_priority_can_fight_naming_both_files_and_lines():
    retrain, rollback = _policy("retrain-all", "retrain"), _policy("rollback-all", "rollback")

    [overlap] = find_overlaps([retrain, rollback])

    assert (overlap.first, overlap.second, overlap.model) == (retrain, rollback, "x")
    assert overlap.reason == "conflicting actions retrain and rollback"
    # policy_text writes `    type: retrain` on line 8 of each file
    assert [(p.line, p.column) for p in overlap.positions] == [(8, 11), (8, 11)]
    error = overlap.as_error()
    assert (error.source, error.line, error.column, error.field) == ("retrain-all.yaml", 8, 11, "spec.action.type")
    assert str(overlap) == (
        "retrain-all.yaml:8:11: spec.action.type: policy 'retrain-all' can fight policy 'rollback-all' "
        "(rollback-all.yaml:8:11): both select model 'x' at priority 0, with conflicting actions retrain and "
        "rollback; give one a higher spec.priority, or narrow a spec.selector")


def test_a_priority_between_them_settles_it():
    assert _pairs(_policy("a", "retrain", priority=50), _policy("b", "rollback", priority=90)) == []


@pytest.mark.parametrize(("first", "second", "example"), [
    (["credit-*"], ["credit-risk"], "credit-risk"),          # a glob and a name it matches
    (["credit-*"], ["*-risk"], "credit-risk"),               # two globs that meet
    (["fraud", "credit-?"], ["credit-[0-9]"], "credit-0"),   # one glob of a list is enough
    (["*"], ["m[!a-y]"], "m0"),
])
def test_selectors_whose_globs_meet_can_fight_and_the_report_names_a_model_both_select(first, second, example):
    [overlap] = find_overlaps([_policy("a", "retrain", models=first), _policy("b", "rollback", models=second)])
    assert overlap.model == example
    assert any(fnmatchcase(example, g) for g in first) and any(fnmatchcase(example, g) for g in second)


@pytest.mark.parametrize(("first", "second"), [
    (["credit-*"], ["fraud-*"]),
    (["credit-[a-m]*"], ["credit-[n-z]*"]),
    (["credit-risk"], ["credit-risk-v2"]),
    (["m?"], ["[!a-y]*"]),
])
def test_selectors_whose_globs_cannot_meet_do_not_fight(first, second):
    assert _pairs(_policy("a", "retrain", models=first), _policy("b", "rollback", models=second)) == []


def test_labels_that_contradict_keep_them_apart_and_labels_that_add_up_do_not():
    risk = _policy("a", "retrain", labels={"team": "risk"})
    assert _pairs(risk, _policy("b", "rollback", labels={"team": "fraud"})) == []

    [overlap] = find_overlaps([risk, _policy("c", "rollback", labels={"tier": "gold"})])
    assert overlap.labels == {"team": "risk", "tier": "gold"}
    assert "both select model 'x' with labels team=risk, tier=gold at priority 0" in overlap.message


def test_the_same_action_with_different_params_can_fight_and_with_the_same_params_cannot():
    [overlap] = find_overlaps([_policy("a", "retrain", params={"window": "4h"}),
                               _policy("b", "retrain", params={"window": "1d"})])
    assert overlap.reason == 'the same action retrain with different params ({"window": "4h"} and {"window": "1d"})'
    assert _pairs(_policy("a", "retrain", params={"window": "4h"}), _policy("b", "retrain", params={"window": "4h"})) \
        == []


def test_actions_that_do_not_conflict_do_not_fight():
    assert _pairs(_policy("a", "retrain"), _policy("b", "notify")) == []
    assert _pairs(_policy("a", "scale-up"), _policy("b", "rollback")) == []


def test_policies_that_never_act_cannot_fight():
    assert _pairs(_policy("a", "retrain"), _policy("b", "rollback", mode="dry-run")) == []
    assert _pairs(_policy("a", "retrain", mode="off"), _policy("b", "rollback")) == []
    assert _pairs(_policy("a", "retrain"), _policy("b", "rollback", approval="required")) == [("a", "b")]


def test_an_exclusion_naming_the_other_action_says_how_they_interact():
    excluded = _policy("a", "retrain", never_with=[{"action": "rollback", "within": "24h"}])
    assert _pairs(excluded, _policy("b", "rollback")) == []


def test_conflicting_pairs_can_be_added_for_plugin_actions():
    assert _pairs(_policy("up", "scale-up"), _policy("down", "scale-down")) == [("up", "down")]  # in the table
    opens, closes = _policy("open", "open-gate"), _policy("close", "close-gate")
    assert _pairs(opens, closes) == []
    pair = frozenset({"open-gate", "close-gate"})
    assert _pairs(opens, closes, conflicts=CONFLICTING_ACTIONS | {pair}) == [("open", "close")]


def test_every_pair_is_checked_once_in_the_order_given():
    policies = [_policy("a", "retrain"), _policy("b", "rollback"), _policy("c", "rollback", params={"x": 1}),
                _policy("d", "notify")]
    assert _pairs(*policies) == [("a", "b"), ("a", "c"), ("b", "c")]


# ---------------------------------------------------------------------------------------------- globs, exactly

GLOB_ALPHABET = "ab-*?[]!"
NAME_ALPHABET = "ab-]![x"


def _brute_force(first: str, second: str, longest: int = 5) -> bool:
    """Some name of up to ``longest`` characters over the patterns' characters (and one other) matches both."""
    return any(fnmatchcase(name, first) and fnmatchcase(name, second)
               for size in range(1, longest + 1) for name in map("".join, product(NAME_ALPHABET, repeat=size)))


@settings(derandomize=True, database=None, max_examples=400, deadline=None)
@given(first=st.text(GLOB_ALPHABET, max_size=5), second=st.text(GLOB_ALPHABET, max_size=5))
def test_glob_intersection_agrees_with_brute_force(first: str, second: str):
    example = glob_intersection(first, second)
    if example is not None:
        assert example and fnmatchcase(example, first) and fnmatchcase(example, second)
    else:
        assert not _brute_force(first, second)
