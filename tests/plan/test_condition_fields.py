"""Conditions are checked against the context's declared fields at load: a typo is an error with a suggestion."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlmodel import select

from knowledge.database import session_scope
from knowledge.tables import Observation
from mape.errors import PolicyError
from mape.plan import Condition, ConditionError, load_policy_text
from mape.plan.fields import CONTEXT_FIELDS

POLICY = """\
apiVersion: mape/v1
kind: Policy
metadata: {{name: p}}
spec:
  when: "{when}"
  unless: "{unless}"
  action: {{type: retrain}}
"""


@pytest.mark.parametrize(("expression", "message"), [
    ("drift.shar_drifted > 0.3", "unknown field 'shar_drifted' of drift (did you mean 'share_drifted'?)"),
    ("performance.acuracy < 0.9", "unknown field 'acuracy' of performance (did you mean 'accuracy'?)"),
    ("model.can_rollback", "unknown field 'can_rollback' of model (did you mean 'can_roll_back'?)"),
    ("'data_drift' in symptoms && symptoms.data_drift.age > 60.0",
     "unknown field 'age' of symptoms.data_drift"),
    ("has(drift.shared) && drift.shared > 0.1", "unknown field 'shared' of drift"),
])
def test_a_field_typo_is_an_error_naming_the_field_and_the_nearest_name(expression, message):
    with pytest.raises(ConditionError) as info:
        Condition(expression)
    assert message in str(info.value)


@pytest.mark.parametrize("expression", [
    "baseline.anything_training_recorded > 0.5",           # the production version's metrics: data, not schema
    "'retrain' in since_last && since_last.retrain > 60.0",  # action types are data
    "model.labels.team == 'risk' && model.labels['cost-center'] == 'x'",
    "'fairness_gap' in symptoms && symptoms.fairness_gap.severity == 'critical'",  # any symptom kind
    "model.name.startsWith('credit.') && drift.share_drifted > 0.1",  # a method call, and a dotted string
    "[1, 2].exists(x, x > 1) && performance.accuracy < 0.9",
    "drift . share_drifted > 0.3",
])
def test_open_roots_method_calls_strings_and_comprehensions_are_accepted(expression):
    Condition(expression)


def test_a_loaded_policy_names_file_and_field_for_a_typo_in_unless(tmp_path: Path):
    text = POLICY.format(when="drift.share_drifted > 0.3", unless="performance.n_labeld < 100.0")
    with pytest.raises(PolicyError) as info:
        load_policy_text(text, source=tmp_path / "p.yaml", known_actions={"retrain"})
    message = str(info.value)
    assert "p.yaml" in message and "spec.unless" in message and "did you mean 'n_labelled'" in message


def test_every_summary_metric_the_monitor_writes_is_a_declared_context_field(tmp_path: Path):
    """The contract between the Monitor and the Plan stage, checked on a real monitor run."""
    from tests.controller.world import make_world

    policies = tmp_path / "policies"
    policies.mkdir()
    world = make_world(tmp_path / "world", policies)
    world.serve_hour(1)
    world.controller.tick(world.scenario.at(1))
    with session_scope(world.controller.engine) as session:
        metrics = {o.metric for o in session.exec(select(Observation)) if not o.labels}
    assert {m.split(".")[0] for m in metrics} == {"drift", "performance", "quality"}
    for metric in metrics:
        root, name = metric.split(".", 1)
        assert name in CONTEXT_FIELDS[root].fields, f"the monitor writes {metric}, which policies cannot name"
