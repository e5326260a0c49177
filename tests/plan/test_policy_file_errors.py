"""A bad policy document is refused with an error naming the file, the field path and what is wrong."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
import yaml

from mape.errors import ConfigError, PolicyError
from mape.plan import load_policy_text
from tests.plan.helpers import KNOWN_ACTIONS, policy_document, policy_text


def _refusal(text: str, source: str = "policies/bad.yaml") -> PolicyError:
    with pytest.raises(PolicyError) as info:
        load_policy_text(text, source, known_actions=KNOWN_ACTIONS)
    return info.value


def _with_spec(**spec: object) -> str:
    return policy_text("bad", **spec)


def test_a_valid_document_loads_with_the_documented_defaults():
    loaded = load_policy_text(policy_text("ok"), "policies/ok.yaml", known_actions=KNOWN_ACTIONS)
    spec = loaded.policy.spec
    assert (loaded.name, loaded.action, loaded.source) == ("ok", "retrain", "policies/ok.yaml")
    assert spec.selector.models == ["*"] and spec.selector.labels == {}
    assert (spec.priority, spec.cooldown, spec.mode, spec.approval, spec.unless) == (
        0, timedelta(hours=1), "enforce", "none", None)
    assert loaded.policy.metadata.owner == "" and loaded.policy.metadata.labels == {}


def test_an_unknown_field_is_an_error_with_a_suggestion():
    error = _refusal(_with_spec(cooldwn="6h"))
    assert isinstance(error, ConfigError)
    assert (error.source, error.field) == ("policies/bad.yaml", "spec.cooldwn")
    assert (error.line, error.column) == (9, 3)  # the key that is not a field
    assert str(error).startswith("policies/bad.yaml:9:3: spec.cooldwn: unknown field (did you mean 'cooldown'?)")


def test_an_unknown_top_level_field_names_the_allowed_ones():
    document = policy_document("bad")
    document["specs"] = {}
    error = _refusal(yaml.safe_dump(document))
    assert error.field == "specs"
    assert "allowed here: apiVersion, kind, metadata, spec" in str(error)


def test_a_bad_mode_names_the_field_and_the_value():
    error = _refusal(_with_spec(mode="enforced"))
    assert error.field == "spec.mode"
    assert error.value == "enforced"
    assert "'enforce', 'dry-run' or 'off'" in str(error)


def test_an_unquoted_yaml_off_is_the_mode_off_not_a_boolean():
    text = policy_text("quiet").replace("spec:\n", "spec:\n  mode: off\n", 1)
    assert "mode: off" in text
    assert load_policy_text(text, "quiet.yaml", known_actions=KNOWN_ACTIONS).policy.spec.mode == "off"


@pytest.mark.parametrize("cooldown", ["6 hours", "soon", -5])
def test_a_bad_duration_names_the_field(cooldown):
    error = _refusal(_with_spec(cooldown=cooldown))
    assert (error.source, error.field) == ("policies/bad.yaml", "spec.cooldown")
    assert "not a duration" in str(error)


@pytest.mark.parametrize(
    ("cooldown", "expected"), [("6h", timedelta(hours=6)), (0, timedelta(0)), ("90s", timedelta(seconds=90))]
)
def test_durations_are_parsed(cooldown, expected):
    loaded = load_policy_text(policy_text("ok", cooldown=cooldown), "ok.yaml", known_actions=KNOWN_ACTIONS)
    assert loaded.policy.spec.cooldown == expected


def test_a_missing_required_field_is_named():
    document = policy_document("bad")
    del document["spec"]["when"]
    error = _refusal(yaml.safe_dump(document))
    assert error.field == "spec.when"
    assert "Field required" in str(error)


def test_a_name_that_is_not_a_dns_label_is_refused():
    error = _refusal(policy_text("Retrain_On_Drift"))
    assert error.field == "metadata.name"


def test_the_wrong_api_version_is_refused():
    document = policy_document("bad")
    document["apiVersion"] = "mape/v2"
    assert _refusal(yaml.safe_dump(document)).field == "apiVersion"


def test_a_cel_syntax_error_names_the_file_and_spec_when_and_marks_the_position():
    error = _refusal(_with_spec(when="drift.share_drifted >"))
    assert (error.source, error.field) == ("policies/bad.yaml", "spec.when")
    message = str(error)
    # `  when: drift.share_drifted >` is line 6; the end of the expression, where CEL wants more, is column 30
    assert message.startswith("policies/bad.yaml:6:30: spec.when: not a valid CEL expression")
    assert "| drift.share_drifted >" in message and "^" in message


def test_a_cel_syntax_error_in_unless_names_spec_unless():
    assert _refusal(_with_spec(unless="model.labels[")).field == "spec.unless"


def test_a_misspelt_context_root_gets_a_suggestion():
    error = _refusal(_with_spec(when="drfit.share_drifted > 0.3"))
    assert error.field == "spec.when"
    assert "unknown name 'drfit' (did you mean 'drift'?)" in str(error)
    assert "since_last" in str(error)  # the known roots are listed


def test_comprehension_variables_are_not_mistaken_for_context_roots():
    text = _with_spec(when="model.labels.exists(k, k == 'team') && symptoms.all(kind, kind != 'bias')")
    loaded = load_policy_text(text, "ok.yaml", known_actions=KNOWN_ACTIONS)
    assert loaded.when.variables == {"model", "symptoms"}


def test_an_unknown_action_type_is_refused_with_the_known_ones():
    error = _refusal(policy_text("bad", action="retrian"))
    assert error.field == "spec.action.type"
    assert "unknown action 'retrian' (did you mean 'retrain'?); known: notify, rescale, retrain, rollback" in str(error)


def test_without_known_actions_the_action_check_is_skipped():
    loaded = load_policy_text(policy_text("ok", action="rescale"), "ok.yaml", known_actions=None)
    assert loaded.action == "rescale"


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("spec: [unclosed", "not valid YAML"),
        ("- just\n- a list\n", "must be a mapping"),
        ("", "exactly one policy document; found no document"),
        (policy_text("a") + "---\n" + policy_text("b"), "found 2 documents"),
    ],
)
def test_a_file_that_is_not_one_yaml_mapping_is_refused(text, fragment):
    error = _refusal(text)
    assert error.source == "policies/bad.yaml"
    assert fragment in str(error)


def test_the_source_may_be_a_path(tmp_path):
    path = tmp_path / "bad.yaml"
    with pytest.raises(PolicyError) as info:
        load_policy_text(policy_text("bad", mode="sometimes"), path, known_actions=KNOWN_ACTIONS)
    assert info.value.source == str(path)
    assert str(info.value).startswith(f"{path}:9:9: spec.mode:")


def test_action_params_must_be_json_values():
    text = policy_text("bad", params={"window": "4h"}).replace("window: 4h", "deadline: 2026-01-01")
    assert "deadline: 2026-01-01" in text
    error = _refusal(text)
    assert error.field == "spec.action.params"
    assert "quote dates" in str(error)


def test_unknown_field_hints_use_the_yaml_names_and_reach_into_optional_sub_models():
    from mape.plan.loader import load_policy_text

    base = "apiVersion: mape/v1\nkind: Policy\nmetadata: {name: p}\nspec:\n  when: 'true'\n  action: {type: retrain}\n"
    with pytest.raises(PolicyError) as typo:
        load_policy_text(base + "  fro: 2h\n", source="p.yaml", known_actions={"retrain"})
    assert "spec.fro: unknown field (did you mean 'for'?)" in str(typo.value)
    assert "for_" not in str(typo.value)
    with pytest.raises(PolicyError) as nested:
        load_policy_text(base + "  rate_limit: {max: 3, per: 1h, pre: 2h}\n", source="p.yaml",
                         known_actions={"retrain"})
    assert "spec.rate_limit.pre: unknown field (did you mean 'per'?)" in str(nested.value)


def test_a_long_condition_with_many_syntax_errors_gets_a_short_message_naming_the_first():
    """Found by the fuzz test: the CEL parser repeats the whole line under each of its errors."""
    text = (Path(__file__).resolve().parents[2] / "policies" / "fairness-guard.yaml").read_text().replace(
        "has(fairness.demographic_parity_difference)", "has(&a [*a]fairness.demographic_parity_difference)", 1)
    try:
        load_policy_text(text, "policies/fuzzed.yaml")
    except PolicyError as exc:
        message = str(exc)
    else:
        raise AssertionError("the policy loaded")
    line = text.splitlines().index("  when: >-") + 2  # the condition's first line, where YAML's block begins
    assert message.startswith(f"policies/fuzzed.yaml:{line}:9: spec.when: not a valid CEL expression: at 1:5: ")
    assert "more errors)" in message and len(message) < 600
