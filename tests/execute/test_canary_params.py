"""The ``canary`` parameter of ``retrain``: validated when the policy file loads, with errors naming field and value."""

from __future__ import annotations

from datetime import timedelta

import pytest
from pydantic import ValidationError

import mape.execute.actions  # noqa: F401 - registers the built-in actions on the default registry
from mape.config import KubernetesServingConfig
from mape.execute.actions.retrain import RetrainParams
from mape.execute.canary import CanaryParams
from mape.execute.registry import default_registry
from mape.plan.loader import check_policy_text

VERIFY = '  verify: {expect: "performance.accuracy_drop < 0.02", within: 2h}\n'
POLICY = """\
apiVersion: mape/v1
kind: Policy
metadata: {name: retrain-canary}
spec:
  when: "true"
  action:
    type: retrain
    params:
      window: 4h
      canary: %s
%s"""


def _errors(canary: str, verify: str = VERIFY) -> list[str]:
    loaded, errors = check_policy_text(POLICY % (canary, verify), "policies/retrain-canary.yaml",
                                       known_actions=default_registry.params_models())
    assert (loaded is None) == bool(errors)
    return [str(error) for error in errors]


def test_steps_are_shares_with_a_bake_time_each():
    canary = CanaryParams.model_validate({"steps": [0.1, {"share": 0.5, "bake": "2h"}, 0.8], "bake": "30m"})
    assert [(s.share, s.bake) for s in canary.plan()] == [(0.1, timedelta(minutes=30)), (0.5, timedelta(hours=2)),
                                                          (0.8, timedelta(minutes=30))]
    assert canary.plan()[1].as_dict() == {"share": 0.5, "bake": "2h"}
    # a retrain's training entrypoint never sees it
    params = RetrainParams.model_validate({"window": "4h", "canary": {"steps": [0.2], "bake": "1h"}, "depth": 3})
    assert params.canary is not None and params.verify_required is not None
    assert RetrainParams.model_validate({"window": "4h"}).verify_required is None


def test_a_valid_canary_with_verify_loads():
    assert _errors("{steps: [0.1, 0.5], bake: 1h}") == []


@pytest.mark.parametrize("canary, verify, expected", [
    ("{steps: [0.1, 0.5], bake: 1h}", "",
     "policies/retrain-canary.yaml:10:15: spec.action.params.canary: a canary widens only while the policy's verify "
     "holds over each step's bake time; add spec.verify (expect and within)"),
    ("{steps: [0.5, 0.1], bake: 1h}", VERIFY,
     "policies/retrain-canary.yaml:10:23: spec.action.params.canary.steps: shares must increase from step to step: "
     "steps[1] is 0.1, not above steps[0] (0.5)"),
    ("{steps: [0.1, 1.0], bake: 1h}", VERIFY,
     "policies/retrain-canary.yaml:10:29: spec.action.params.canary.steps[1].share: Input should be less than 1 "
     "(got 1.0)"),
    ("{steps: [0], bake: 1h}", VERIFY,
     "policies/retrain-canary.yaml:10:24: spec.action.params.canary.steps[0].share: Input should be greater than 0"),
    ("{steps: [0.1, {share: 0.5}]}", VERIFY,
     "policies/retrain-canary.yaml:10:15: spec.action.params.canary: step(s) 0, 1 have no bake time: give "
     "canary.bake (for every step), or each step a bake of its own, e.g. {share: 0.1, bake: 1h}"),
    ("{steps: [], bake: 1h}", VERIFY,
     "policies/retrain-canary.yaml:10:23: spec.action.params.canary.steps: List should have at least 1 item after "
     "validation, not 0"),
    ("{steps: [0.1], bake: 0s}", VERIFY,
     "policies/retrain-canary.yaml:10:36: spec.action.params.canary.bake: must be longer than 0 (got '0s')"),
    ("{steps: [0.1], bake: '1 hour'}", VERIFY,
     "policies/retrain-canary.yaml:10:36: spec.action.params.canary.bake: '1 hour' is not a duration; use a number "
     "and a unit such as 90s, 15m, 6h, 14d or 2w"),
    ("{steps: [{share: 0.2, bak: 1h}], bake: 1h}", VERIFY,
     "policies/retrain-canary.yaml:10:37: spec.action.params.canary.steps[0].bak: unknown field (did you mean "
     "'bake'?); allowed here: bake, share"),
])
def test_a_bad_canary_is_refused_naming_the_field_and_the_value(canary: str, verify: str, expected: str):
    assert _errors(canary, verify) == [expected]


def test_the_canary_deployment_must_be_another_deployment():
    assert KubernetesServingConfig(deployment="ranker").canary == "ranker-canary"
    assert KubernetesServingConfig(deployment="ranker", canary_deployment="ranker-next").canary == "ranker-next"
    with pytest.raises(ValidationError, match="canary_deployment must name another Deployment than deployment"):
        KubernetesServingConfig(deployment="ranker", canary_deployment="ranker")
    with pytest.raises(ValidationError, match="canary_deployment"):
        KubernetesServingConfig(deployment="ranker", canary_deployment="Not_A_Name")
