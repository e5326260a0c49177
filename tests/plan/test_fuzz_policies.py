"""Mangled policy files are refused with their source named, never with any other exception (property-based).

Hypothesis feeds the loader thousands of documents derived from the shipped
policies in ``policies/``: fields deleted, renamed or added; values replaced
with NaN, infinities, huge numbers, wrong types, unicode, deep nesting;
raw YAML tokens spliced in (bad explicit tags, undefined or recursive
aliases, alias bombs); the text truncated, cut or sprinkled with garbage; and
binary files. Whatever comes in, :func:`load_policy_text` returns a policy or
raises a :class:`~mape.errors.PolicyError` whose message starts with the
source, and :func:`load_policies` reports every refused file by name. The
conditions of the documents that do load are evaluated against mangled
contexts and raise nothing but :class:`~mape.errors.ConditionError`.

Runs are derandomized: a failure is reproduced by running the test again.
"""

from __future__ import annotations

import tempfile
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from mape.errors import ConditionError, PolicyError
from mape.plan import LoadedPolicy, is_policy_file, load_policies, load_policy_text
from mape.plan.expressions import Condition
from tests.plan.fuzzing import FUZZ, RAW_TOKENS, SHIPPED_TEXTS, any_text, cel_terms, contexts, mangled_documents
from tests.plan.helpers import KNOWN_ACTIONS

SOURCE = "policies/fuzzed.yaml"
TICK = datetime(2026, 1, 5, tzinfo=timezone.utc)

# ---------------------------------------------------------------------------------------------- the loader


def _load(text: str, source: str = SOURCE) -> LoadedPolicy | None:
    """The loader's contract: a policy, or a PolicyError naming the source; any other exception fails the test."""
    try:
        loaded = load_policy_text(text, source, known_actions=KNOWN_ACTIONS)
    except PolicyError as exc:
        assert exc.source == source
        assert str(exc).startswith(source)
        assert len(str(exc)) < 2_000, "an error message should be readable, not the whole input"
        return None
    assert isinstance(loaded, LoadedPolicy) and loaded.source == source and loaded.text == text
    return loaded


@pytest.mark.slow
@settings(FUZZ, max_examples=2000)
@given(text=any_text)
def test_any_text_loads_or_is_refused_with_its_source_named(text: str):
    loaded = _load(text)
    if loaded is not None:  # every duration the planner adds to or subtracts from a tick's time fits the calendar
        spec = loaded.policy.spec
        per = spec.rate_limit.per if spec.rate_limit else timedelta(0)
        for duration in (spec.cooldown, spec.for_, spec.keep_firing_for, spec.approval_timeout, per):
            assert timedelta(0) <= duration
            assert TICK - duration <= TICK + duration  # neither leaves the calendar (OverflowError)


@pytest.mark.slow
@settings(FUZZ, max_examples=2000)
@given(text=mangled_documents())
def test_mangled_shipped_documents_load_or_are_refused(text: str):
    _load(text)


def _splice(text: str, token: str) -> str:
    assert "__TOKEN__" in text
    return text.replace("'__TOKEN__'", token).replace("__TOKEN__", token)


def test_the_shipped_policies_themselves_load():
    assert SHIPPED_TEXTS
    for name, text in SHIPPED_TEXTS.items():
        assert _load(text, f"policies/{name}") is not None


@pytest.mark.parametrize("token", RAW_TOKENS, ids=lambda t: repr(t[:24]))
@pytest.mark.parametrize("field", ["cooldown", "priority", "when", "mode", "approval_timeout", "for"])
def test_each_raw_yaml_token_in_each_field_is_loaded_or_refused(token: str, field: str):
    text = SHIPPED_TEXTS["retrain-on-drift.yaml"]
    document = yaml.safe_load(text)
    document["spec"][field] = "__TOKEN__"
    _load(_splice(yaml.safe_dump(document, sort_keys=False), token))


@pytest.mark.parametrize(("field", "value", "words"), [
    ("cooldown", "1e308", "duration"),
    ("cooldown", ".inf", "duration"),
    ("cooldown", "99999999999999999999d", "duration"),
    ("approval_timeout", "999999999d", "at most"),
    ("for", "1e400h", "duration"),
    ("priority", "0x" + "f" * 5000, "less than or equal"),
])
def test_durations_and_numbers_too_large_for_a_calendar_are_refused(field: str, value: str, words: str):
    document = yaml.safe_load(SHIPPED_TEXTS["retrain-on-drift.yaml"])
    document["spec"][field] = "__TOKEN__"
    with pytest.raises(PolicyError, match=words) as info:
        load_policy_text(_splice(yaml.safe_dump(document), value), SOURCE, known_actions=KNOWN_ACTIONS)
    assert info.value.field == f"spec.{field}"


@pytest.mark.parametrize(("text", "words"), [
    ("[" * 5000 + "]" * 5000, "nested too deeply"),
    ("a: !!timestamp 2001-99-99", "not valid YAML"),
    ("a: !!float x", "not valid YAML"),
    ("spec: &a {x: *a}", "too large"),
    ("spec: " + RAW_TOKENS[-1], "too large"),
])
def test_yaml_the_parser_chokes_on_is_refused_as_such(text: str, words: str):
    with pytest.raises(PolicyError, match=words):
        load_policy_text(text, SOURCE, known_actions=KNOWN_ACTIONS)


def test_a_nul_character_is_refused_because_the_knowledge_base_cannot_store_it():
    document = yaml.safe_load(SHIPPED_TEXTS["retrain-on-drift.yaml"])
    document["metadata"]["owner"] = "ml\x00platform"
    with pytest.raises(PolicyError, match="NUL") as info:
        load_policy_text(yaml.safe_dump(document), SOURCE, known_actions=KNOWN_ACTIONS)
    assert info.value.field == "metadata.owner"


# ---------------------------------------------------------------------------------------------- a directory

file_contents = st.one_of(
    any_text.map(lambda t: t.encode("utf-8", "surrogatepass")),
    st.binary(max_size=300),
    st.sampled_from(list(SHIPPED_TEXTS.values())).map(str.encode),
)
file_names = st.from_regex(r"[a-z0-9_.\-]{1,12}\.(yaml|yml|json|txt)", fullmatch=True)


@pytest.mark.slow
@settings(FUZZ, max_examples=300)
@given(files=st.dictionaries(file_names, file_contents, min_size=1, max_size=6))
def test_every_policy_file_of_a_directory_is_loaded_or_reported_by_name(files: dict[str, bytes]):
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        for name, content in files.items():
            (directory / name).write_bytes(content)
        result = load_policies(directory, known_actions=KNOWN_ACTIONS)
    policy_files = {str(directory / n) for n in files if is_policy_file(directory / n)}
    loaded = {p.source for p in result.policies}
    refused = {e.source for e in result.errors}
    assert all(isinstance(e, PolicyError) for e in result.errors)
    assert loaded | refused == policy_files
    assert not loaded & refused
    assert len({p.name for p in result.policies}) == len(result.policies)


# ---------------------------------------------------------------------------------------------- conditions


@pytest.mark.slow
@settings(FUZZ, max_examples=1500)
@given(expression=cel_terms(), context=contexts)
def test_a_condition_that_compiles_evaluates_to_a_boolean_or_a_condition_error(expression: str,
                                                                               context: dict[str, Any]):
    try:
        condition = Condition(expression)
    except ConditionError:
        return
    try:
        result = condition.evaluate(context)
    except ConditionError:
        return
    assert isinstance(result, bool)


def test_an_expression_longer_than_the_limit_is_refused_before_it_reaches_cel():
    # 20,000 chained additions crash the CEL interpreter's stack (a segmentation fault, not an exception)
    with pytest.raises(ConditionError, match="too long"):
        Condition(" + ".join(["1"] * 20_000) + " > 0")


def test_dates_and_bytes_in_params_are_refused_with_their_field():
    document = yaml.safe_load(SHIPPED_TEXTS["retrain-on-drift.yaml"])
    for value in (date(2026, 1, 1), b"\x00\xff"):
        document["spec"]["action"]["params"] = {"window": value}
        with pytest.raises(PolicyError) as info:
            load_policy_text(yaml.safe_dump(document), SOURCE, known_actions=KNOWN_ACTIONS)
        assert info.value.field == "spec.action.params"
