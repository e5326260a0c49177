"""Hypothesis strategies for bad input to the Plan stage: mangled policy texts, CEL conditions, junk values.

The policy strategies start from the shipped policies in ``policies/`` and
break them: fields deleted, renamed, added or wrapped; values replaced with
NaN, infinities, huge numbers, wrong types, unicode, nested junk; raw YAML
spliced in (bad explicit tags, undefined and recursive aliases, an alias
bomb, deep nesting); the text truncated, cut or sprinkled with garbage.
Used by ``tests/plan/test_fuzz_*.py`` and ``tests/controller/test_fuzz_tick.py``.

Every run is derandomized (:data:`FUZZ`): the same examples each time, so a
failure in CI is reproduced by running the test again.
"""

from __future__ import annotations

import math
from datetime import timezone
from pathlib import Path
from typing import Any

import yaml
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from mape.plan import is_policy_file

POLICIES = Path(__file__).resolve().parents[2] / "policies"
SHIPPED_TEXTS = {p.name: p.read_text(encoding="utf-8") for p in sorted(POLICIES.iterdir()) if is_policy_file(p)}

FUZZ = settings(derandomize=True, database=None, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])

# ---------------------------------------------------------------------------------------------- strategies

#: Raw YAML spliced in where a value goes: what a dump of Python values never writes.
RAW_TOKENS = [
    ".nan", ".inf", "-.inf", "1e308", "-1e308", "1e999", "0x" + "f" * 5000, "9" * 5000, "-0", "0o777",
    "!!float x", "!!int 0x", "!!int 12abc", "!!timestamp 2001-99-99", "!!timestamp x", "!!binary ZZZ",
    "!!set {a, b}", "!!omap {a: 1}", "!!pairs [a]", "!!python/object:os.system {}", "!!str", "!custom 1",
    "*undefined", "&a [*a]", "&b {x: *b}", "{<<: 5}", "{<<: [5]}", "[" * 600 + "]" * 600,
    "{a: " * 400 + "1" + "}" * 400, '"\\0"', '"\\ud800"', '"a\\x00b"', '"\\U0001F600"', "~", "''", "2001-12-14",
    "2001-12-14t21:59:43.10-05:00", "1_000", "0b101", "190:20:30", "yes", "off", "? [a]\n: b", "|\n  multi\n  line",
    "[" + ", ".join(["&x" + str(i) + " [" + ", ".join(["*x" + str(i - 1)] * 9 if i else ["lol"] * 9) + "]"
                     for i in range(8)]) + "]",
]
PLACEHOLDER = "__RAW_TOKEN_{}__"

scalars = st.one_of(
    st.none(), st.booleans(),
    st.integers(), st.integers(min_value=-(2**200), max_value=2**200),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([math.nan, math.inf, -math.inf, 1e308, -1e308, 5e-324, -0.0, 2**63, -(2**63) - 1, 2**64]),
    st.text(max_size=40), st.text(alphabet=st.characters(codec="utf-8"), max_size=40),
    st.sampled_from(["", " ", "\n", "6h", "-6h", "0s", "1e400h", "999999999d", "99999999999999999999d", "retrain",
                     "rollback", "true", "false", "enforce", "dry-run", "required", "\u202e", "\x7f", "ℌ", "𝔡"]),
    st.binary(max_size=20), st.dates(), st.datetimes(timezones=st.just(timezone.utc)),
)
junk = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                     st.dictionaries(st.text(max_size=10), inner, max_size=4)),
                    max_leaves=12)


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every key path of a parsed document, containers included."""
    found = [prefix] if prefix else []
    if isinstance(node, dict):
        for key, value in node.items():
            found += _paths(value, (*prefix, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            found += _paths(value, (*prefix, index))
    return found


def _parent(document: Any, path: tuple[Any, ...]) -> Any:
    for key in path[:-1]:
        document = document[key]
    return document


@st.composite
def mangled_documents(draw: st.DrawFn) -> str:
    """A shipped policy with one to four fields deleted, replaced, renamed or added, as YAML text."""
    document = yaml.safe_load(SHIPPED_TEXTS[draw(st.sampled_from(sorted(SHIPPED_TEXTS)))])
    raw: list[str] = []
    for _ in range(draw(st.integers(1, 4))):
        paths = _paths(document)
        if not paths:
            break
        path = draw(st.sampled_from(paths))
        parent = _parent(document, path)
        key = path[-1]
        operation = draw(st.sampled_from(["delete", "replace", "raw", "rename", "add", "wrap"]))
        if operation == "delete":
            del parent[key]
        elif operation == "replace":
            parent[key] = draw(junk)
        elif operation == "raw":
            raw.append(draw(st.sampled_from(RAW_TOKENS)))
            parent[key] = PLACEHOLDER.format(len(raw) - 1)
        elif operation == "rename" and isinstance(parent, dict):
            parent[draw(st.text(max_size=12))] = parent.pop(key)
        elif operation == "add" and isinstance(parent, dict):
            parent[draw(st.one_of(st.text(max_size=12), st.sampled_from(["for", "cooldwn", "spec", "when"])))] = \
                draw(junk)
        elif operation == "wrap":
            parent[key] = draw(st.sampled_from([[parent[key]], {"value": parent[key]}]))
    try:
        text = yaml.safe_dump(document, allow_unicode=draw(st.booleans()), sort_keys=False)
    except (yaml.YAMLError, ValueError):  # a value PyYAML cannot write (an int past the digit limit)
        text = repr(document)
    for index, token in enumerate(raw):
        text = text.replace(f"'{PLACEHOLDER.format(index)}'", token).replace(PLACEHOLDER.format(index), token)
    return text


@st.composite
def mangled_texts(draw: st.DrawFn) -> str:
    """A shipped policy's text truncated, cut, duplicated or sprinkled with garbage."""
    text = SHIPPED_TEXTS[draw(st.sampled_from(sorted(SHIPPED_TEXTS)))]
    for _ in range(draw(st.integers(1, 3))):
        i = draw(st.integers(0, len(text)))
        j = draw(st.integers(i, min(len(text), i + 40)))
        operation = draw(st.sampled_from(["truncate", "cut", "insert", "duplicate", "replace", "indent"]))
        if operation == "truncate":
            text = text[:i]
        elif operation == "cut":
            text = text[:i] + text[j:]
        elif operation == "insert":
            text = text[:i] + draw(st.one_of(st.text(max_size=8), st.sampled_from(["\t", ":", "- ", "{", "'", '"',
                                                                                  "#", "&", "*", "!", "%", "\x00",
                                                                                  "\ufeff", "\r"]))) + text[i:]
        elif operation == "duplicate":
            text = text[:j] + text[i:j] + text[j:]
        elif operation == "replace":
            text = text[:i] + draw(st.sampled_from(RAW_TOKENS)) + text[j:]
        else:
            text = text[:i] + " " * draw(st.integers(1, 5)) + text[i:]
    return text


structures = st.recursive(st.one_of(scalars, st.sampled_from(["mape/v1", "Policy"])),
                          lambda inner: st.one_of(st.lists(inner, max_size=5),
                                                  st.dictionaries(st.one_of(st.text(max_size=8), st.sampled_from(
                                                      ["apiVersion", "kind", "metadata", "spec", "when", "action",
                                                       "name", "type"])), inner, max_size=5)),
                          max_leaves=20)


def _dump(value: Any) -> str:
    try:
        return yaml.safe_dump(value, allow_unicode=True)
    except (yaml.YAMLError, ValueError):
        return repr(value)


any_text = st.one_of(
    mangled_documents(), mangled_texts(),
    structures.map(_dump),
    st.text(max_size=200),
    st.binary(max_size=200).map(lambda b: b.decode("latin-1")),
    st.binary(max_size=200).map(lambda b: b.decode("utf-8", "replace")),
    st.lists(st.sampled_from(RAW_TOKENS), min_size=1, max_size=3).map("\n".join),
    st.lists(mangled_documents(), min_size=2, max_size=3).map("\n---\n".join),
)


FIELDS = ["drift.share_drifted", "drift.n_drifted", "drift.n_features", "drift.min_q_value", "drift.detected",
          "performance.accuracy", "performance.accuracy_drop", "performance.f1", "performance.n_labelled",
          "baseline.accuracy", "baseline.f1", "model.versions", "model.can_roll_back", "model.name",
          "model.production_age_seconds", "model.labels.team", "symptoms.data_drift.age_seconds",
          "symptoms.data_drift.severity", "since_last.retrain", "since_last.rollback"]
LITERALS = ["0", "1", "-1", "0.5", "1e308", "-1e308", "9223372036854775807", "-9223372036854775808", "18446744073709551615u",
            "0u", "''", "'risk'", "'\\u00e9'", "true", "false", "null", "[]", "[1, 2.0, 'a']", "{}", "{'a': 1}",
            "b'\\xff'", "duration('1h')", "timestamp('2026-01-01T00:00:00Z')", "double('nan')", "double('inf')",
            "int('x')", "1 / 0", "1 % 0", "1.0 / 0.0"]


@st.composite
def cel_terms(draw: st.DrawFn, depth: int = 0) -> str:
    leaf = st.one_of(st.sampled_from(FIELDS), st.sampled_from(LITERALS))
    if depth >= 3:
        return draw(leaf)
    sub = cel_terms(depth + 1)  # type: ignore[call-arg]
    shape = draw(st.sampled_from(["leaf", "binary", "unary", "call", "has", "in", "ternary", "comprehension"]))
    if shape == "leaf":
        return draw(leaf)
    if shape == "binary":
        op = draw(st.sampled_from(["+", "-", "*", "/", "%", "<", "<=", ">", ">=", "==", "!=", "&&", "||"]))
        return f"({draw(sub)} {op} {draw(sub)})"
    if shape == "unary":
        return f"{draw(st.sampled_from(['!', '-']))}({draw(sub)})"
    if shape == "call":
        fn = draw(st.sampled_from(["size", "int", "uint", "double", "string", "bool", "type", "duration",
                                   "timestamp"]))
        return f"{fn}({draw(sub)})"
    if shape == "has":
        return f"has({draw(st.sampled_from(FIELDS))})"
    if shape == "in":
        return f"({draw(st.sampled_from(['data_drift', 'performance_drop', 'team', 'x']))!r} in " \
               f"{draw(st.sampled_from(['symptoms', 'model.labels', 'baseline', 'since_last', '[1, 2]']))})"
    if shape == "ternary":
        return f"({draw(sub)} ? {draw(sub)} : {draw(sub)})"
    method = draw(st.sampled_from(["exists", "all", "exists_one", "map", "filter"]))
    return f"[{draw(sub)}, {draw(sub)}].{method}(x, {draw(sub)})"


contexts = st.fixed_dictionaries({
    "drift": st.dictionaries(st.sampled_from(["share_drifted", "n_drifted", "n_features", "min_q_value", "detected"]),
                             scalars, max_size=5),
    "performance": st.dictionaries(st.sampled_from(["accuracy", "accuracy_drop", "f1", "n_labelled"]), scalars,
                                   max_size=4),
    "baseline": st.dictionaries(st.sampled_from(["accuracy", "f1"]), junk, max_size=2),
    "symptoms": st.dictionaries(st.sampled_from(["data_drift", "performance_drop"]),
                                st.fixed_dictionaries({"severity": st.text(max_size=5), "opened_at": st.text(max_size=5),
                                                       "age_seconds": scalars}), max_size=2),
    "model": st.fixed_dictionaries({"name": st.text(max_size=10), "labels": st.dictionaries(st.text(max_size=5),
                                                                                            st.text(max_size=5)),
                                    "versions": st.integers(-5, 5), "can_roll_back": st.booleans()}),
    "since_last": st.dictionaries(st.sampled_from(["retrain", "rollback"]), scalars, max_size=2),
})


