"""Every refusal names the file, the line and the column of the problem: the key, the value, or the character in CEL."""

from __future__ import annotations

from pathlib import Path

import pytest

from mape.errors import PolicyError
from mape.plan.loader import check_policy_text, load_policy_paths
from mape.plan.positions import Position, node_at, parse, within_scalar
from tests.plan.helpers import KNOWN_ACTIONS, policy_text

HEAD = "apiVersion: mape/v1\nkind: Policy\nmetadata:\n  name: p\nspec:\n"


def _errors(text: str, known_actions=KNOWN_ACTIONS) -> list[PolicyError]:
    loaded, errors = check_policy_text(text, "policies/p.yaml", known_actions=known_actions)
    assert loaded is None and errors
    return errors


def _at(text: str, error: PolicyError) -> str:
    """The rest of the line from the error's position: what an editor jumping there shows under the cursor."""
    assert error.line is not None and error.column is not None
    return text.splitlines()[error.line - 1][error.column - 1:]


def test_an_unknown_field_points_at_its_key_and_a_bad_value_at_the_value():
    text = HEAD + "  when: 'true'\n  action: {type: retrain}\n  cooldwn: 6h\n  mode: sometimes\n"
    typo, mode = _errors(text)
    assert (typo.field, typo.line, typo.column) == ("spec.cooldwn", 8, 3)
    assert (mode.field, mode.line, mode.column) == ("spec.mode", 9, 9)
    assert _at(text, mode) == "sometimes"
    assert str(typo).startswith("policies/p.yaml:8:3: spec.cooldwn: unknown field (did you mean 'cooldown'?)")
    assert typo.location == "policies/p.yaml:8:3" and typo.source == "policies/p.yaml"


def test_a_missing_field_points_at_the_key_it_belongs_under():
    text = HEAD + "  action: {type: retrain}\n"
    [missing] = _errors(text)
    assert (missing.field, missing.line, missing.column) == ("spec.when", 5, 1)
    assert _at(text, missing) == "spec:"


@pytest.mark.parametrize(("when", "at"), [
    ("drift.shar_drifted > 0.3", "shar_drifted > 0.3"),                     # a plain scalar
    ("'has(drift.n_drifted) && drfit.share_drifted > 0.3'", "drfit.share_drifted > 0.3'"),  # single-quoted
    ('"model.labels.team == \\"risk\\" && performance.acuracy < 0.9"', "acuracy < 0.9\""),  # double, escapes
    (">-\n    'data_drift' in symptoms\n    && symptoms.data_drift.age > 60.0", "age > 60.0"),  # folded block
    ("|\n    'data_drift' in symptoms &&\n      drift.share_drifted >", ">"),  # literal block: CEL's line 2
])
def test_a_cel_error_points_at_the_character_it_is_about_through_every_scalar_style(when: str, at: str):
    text = HEAD + f"  when: {when}\n  action: {{type: retrain}}\n"
    [error] = _errors(text)
    assert error.field == "spec.when"
    if at == ">":  # a syntax error at the end of the expression: just after its last character
        assert error.column == len(text.splitlines()[error.line - 1]) + 1
    else:
        assert _at(text, error) == at


def test_an_unknown_action_points_at_the_type_and_a_yaml_error_at_the_parser_s_mark():
    text = HEAD + "  when: 'true'\n  action:\n    type: retrian\n"
    [error] = _errors(text)
    assert (error.field, _at(text, error)) == ("spec.action.type", "retrian")

    [broken] = _errors("spec: [unclosed\n")
    assert (broken.line, broken.column) == (2, 1)
    assert str(broken).startswith("policies/p.yaml:2:1: not valid YAML: expected ',' or ']'")


def test_a_second_document_is_pointed_at():
    [error] = _errors(policy_text("a") + "---\n" + policy_text("b"))
    assert error.line == 10 and "found 2 documents" in str(error)


def test_after_schema_errors_the_conditions_and_the_action_are_still_checked_and_all_come_in_file_order():
    text = HEAD + ("  when: drift.shar_drifted > 0.3\n"
                   "  unless: 'true'\n"
                   "  action: {type: retrain, params: {window: soon}}\n"
                   "  cooldwn: 6h\n")
    errors = _errors(text, known_actions={"retrain": _retrain_params()})
    assert [(e.field, e.line) for e in errors] == [("spec.when", 6), ("spec.action.params.window", 8),
                                                   ("spec.cooldwn", 9)]
    assert _at(text, errors[1]) == "soon}}"


def _retrain_params():
    from mape.execute.actions.retrain import RetrainParams  # the real one, as the registry gives it

    return RetrainParams


def test_params_are_checked_only_when_the_known_actions_carry_models():
    text = HEAD + "  when: 'true'\n  action: {type: retrain, params: {window: soon}}\n"
    assert check_policy_text(text, known_actions={"retrain"})[0] is not None
    assert check_policy_text(text, known_actions={"retrain": None})[0] is not None
    [error] = _errors(text, known_actions={"retrain": _retrain_params()})
    assert error.field == "spec.action.params.window" and "not a duration" in str(error)


def test_files_and_directories_load_together_with_names_unique_across_them(tmp_path: Path):
    library = tmp_path / "policies"
    library.mkdir()
    (library / "a.yaml").write_text(policy_text("a"))
    (library / "b.yaml").write_text(policy_text("b", action="rollback"))
    extra = tmp_path / "_draft.yaml"  # named explicitly: read whatever its name
    extra.write_text(HEAD.replace("name: p", "name: a") + "  when: 'true'\n  action: {type: retrain}\n")

    result = load_policy_paths([library, library / "a.yaml", extra, tmp_path / "nowhere.yaml"],
                               known_actions=KNOWN_ACTIONS)

    assert [p.name for p in result.policies] == ["a", "b"]
    assert result.sources == [str(library / "a.yaml"), str(library / "b.yaml"), str(extra)]  # a.yaml read once
    missing, duplicate = result.errors
    assert str(missing) == f"{tmp_path / 'nowhere.yaml'}: no such file or directory"
    assert str(duplicate).startswith(f"{extra}:4:9: metadata.name: duplicate policy name 'a': already defined in "
                                     f"{library / 'a.yaml'}")


def test_within_scalar_falls_back_to_the_scalar_s_start_when_source_and_value_part():
    text = 'when: "a\\tb > c"\n'
    [(root, _)] = parse(text)
    node = node_at(root, "when")
    assert within_scalar(text, node, 0) == Position(1, 7)
    assert within_scalar(text, node, 4) == Position(1, 7)  # `\t` in the source is a tab in the value
    assert node_at(root, "nothing.here") is None


def test_a_parameter_model_that_raises_anything_else_refuses_the_file_not_the_loader():
    from pydantic import BaseModel, field_validator

    class Buggy(BaseModel):  # a plugin's model whose validator has a bug
        x: int = 0

        @field_validator("x")
        @classmethod
        def _boom(cls, value: int) -> int:
            raise TypeError("plugin bug")

    text = HEAD + "  when: 'true'\n  action: {type: buggy, params: {x: 1}}\n"
    [error] = _errors(text, known_actions={"buggy": Buggy})
    assert str(error) == "policies/p.yaml:7:33: spec.action.params: the parameter model of buggy failed: " \
                         "TypeError: plugin bug"
