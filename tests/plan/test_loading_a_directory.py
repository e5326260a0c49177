"""A directory of policies loads file by file: bad files are refused and reported, the others keep working."""

from __future__ import annotations

import hashlib
from pathlib import Path

from mape.plan import load_policies
from tests.plan.helpers import KNOWN_ACTIONS, policy_text


def _write(directory: Path, name: str, text: str) -> Path:
    path = directory / name
    path.write_text(text, encoding="utf-8")
    return path


def test_one_malformed_file_is_reported_and_the_two_good_ones_load(tmp_path):
    _write(tmp_path, "a-good.yaml", policy_text("first"))
    _write(tmp_path, "b-bad.yaml", policy_text("broken", when="drift.share_drifted >"))
    _write(tmp_path, "c-good.yml", policy_text("second", action="rollback"))

    result = load_policies(tmp_path, known_actions=KNOWN_ACTIONS)

    assert [p.name for p in result.policies] == ["first", "second"]
    assert [(e.source, e.field) for e in result.errors] == [(str(tmp_path / "b-bad.yaml"), "spec.when")]
    assert not result.ok


def test_every_kind_of_bad_file_is_refused_alone(tmp_path):
    _write(tmp_path, "good.yaml", policy_text("good"))
    _write(tmp_path, "not-yaml.yaml", "spec: [")
    _write(tmp_path, "not-mapping.yaml", "- a\n- b\n")
    _write(tmp_path, "typo-root.yaml", policy_text("typo-root", when="drfit.detected"))
    _write(tmp_path, "typo-action.yaml", policy_text("typo-action", action="retrian"))

    result = load_policies(tmp_path, known_actions=KNOWN_ACTIONS)

    assert [p.name for p in result.policies] == ["good"]
    refused = {Path(e.source).name: e.field for e in result.errors}
    assert refused == {"not-yaml.yaml": None, "not-mapping.yaml": None, "typo-root.yaml": "spec.when",
                       "typo-action.yaml": "spec.action.type"}


def test_a_duplicate_name_refuses_the_later_file_naming_both(tmp_path):
    first = _write(tmp_path, "a.yaml", policy_text("same"))
    second = _write(tmp_path, "b.yaml", policy_text("same", action="rollback"))

    result = load_policies(tmp_path, known_actions=KNOWN_ACTIONS)

    assert [(p.name, p.source) for p in result.policies] == [("same", str(first))]
    (error,) = result.errors
    assert (error.source, error.field) == (str(second), "metadata.name")
    assert str(first) in str(error) and str(second) in str(error)


def test_only_policy_files_are_read(tmp_path):
    _write(tmp_path, "real.yaml", policy_text("real"))
    _write(tmp_path, "also-real.yml", policy_text("also-real"))
    for name in ("_draft.yaml", ".hidden.yaml", "real.test.yaml", "policy.schema.yaml", "README.md",
                 "policy.schema.json", "notes.txt"):
        _write(tmp_path, name, "this would not load: [")
    (tmp_path / "nested").mkdir()
    _write(tmp_path / "nested", "deeper.yaml", "nor would this: [")

    result = load_policies(tmp_path, known_actions=KNOWN_ACTIONS)

    assert result.ok, result.errors
    assert [p.name for p in result.policies] == ["also-real", "real"]  # sorted by file name


def test_the_policy_keeps_its_exact_text_and_its_sha256(tmp_path):
    text = "# a comment is part of the version\n" + policy_text("hashed")
    _write(tmp_path, "hashed.yaml", text)

    (loaded,) = load_policies(tmp_path, known_actions=KNOWN_ACTIONS).policies

    assert loaded.text == text
    assert loaded.sha256 == hashlib.sha256(text.encode()).hexdigest()


def test_a_missing_directory_is_one_error_and_no_policies(tmp_path):
    result = load_policies(tmp_path / "nowhere", known_actions=KNOWN_ACTIONS)
    assert result.policies == []
    assert [e.source for e in result.errors] == [str(tmp_path / "nowhere")]
