"""The numbers policies compare a metric with, to draw as horizontal rules on the dashboard's charts.

What it does: :func:`comparisons` reads the ``&&`` and ``||`` operands of a
CEL condition (:func:`mape.plan.explain.split_terms` for the conjunctions)
and keeps those that compare exactly one context path
(:func:`mape.plan.explain.referenced_paths`) with a number literal, such as
``drift.share_drifted > 0.3``; a comparison of two signals
(``carbon.forecast_min < carbon.intensity * 0.8``) has no fixed line and is
left out. :func:`load_thresholds` loads a policy directory and returns the
comparisons of the policies that select a model (``when`` and ``unless``,
policies in mode ``off`` left out), or why it could not read the directory.

Action types are not checked here (no action registry is imported: it costs
seconds of imports); the Policies page and ``mape policy validate`` report a
policy the controller refuses.

Who calls it: :mod:`dashboard.model`, once per drawing (6 policies load in
about 25 ms, measured on this machine).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from knowledge.tables import ManagedModel
from mape.plan.explain import format_path, referenced_paths, split_terms
from mape.plan.loader import LoadedPolicy, load_policy_paths
from mape.plan.planner import selects

__all__ = ["Threshold", "comparisons", "load_thresholds", "thresholds_of"]

_NUMBER = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"
_OPERATOR = r"<=|>=|==|!=|<|>"
_LEFT = re.compile(rf"^(?P<path>.+?)\s*(?P<op>{_OPERATOR})\s*(?P<number>{_NUMBER})$")
_RIGHT = re.compile(rf"^(?P<number>{_NUMBER})\s*(?P<op>{_OPERATOR})\s*(?P<path>.+?)$")
_MIRROR = {"<": ">", ">": "<", "<=": ">=", ">=": "<=", "==": "==", "!=": "!="}


@dataclass(frozen=True)
class Threshold:
    """One comparison of a metric with a number in a policy: ``metric op value`` (the metric on the left)."""

    metric: str
    op: str
    value: float
    policy: str
    clause: str
    term: str

    def __str__(self) -> str:
        return f"{self.policy} ({self.clause}): {self.metric} {self.op} {self.value:g}"


def _unwrapped(term: str) -> str:
    """``(a > 1)`` → ``a > 1``: one pair of parentheses that encloses the whole term, removed, repeatedly."""
    while term.startswith("(") and term.endswith(")"):
        depth = 0
        for index, char in enumerate(term):
            depth += char == "("
            depth -= char == ")"
            if depth == 0 and index < len(term) - 1:
                return term
        term = term[1:-1].strip()
    return term


def _disjuncts(expression: str) -> list[str]:
    """The ``||`` operands at the top level (outside parentheses and string literals)."""
    parts, depth, start, quote, index = [], 0, 0, "", 0
    while index < len(expression):
        char = expression[index]
        if quote:
            if char == "\\":
                index += 1
            elif char == quote:
                quote = ""
        elif char in "'\"":
            quote = char
        elif char in "([{":
            depth += 1
        elif char in ")]}":
            depth -= 1
        elif depth == 0 and expression.startswith("||", index):
            parts.append(expression[start:index].strip())
            start = index + 2
            index += 1
        index += 1
    parts.append(expression[start:].strip())
    return [p for p in parts if p]


def _operands(expression: str) -> list[str]:
    """The comparisons a condition is built of with ``&&`` and ``||`` (each a leaf of that tree)."""
    found: list[str] = []
    for term in split_terms(expression):
        term = _unwrapped(term)
        parts = _disjuncts(term)
        if len(parts) > 1:
            for part in parts:
                found.extend(_operands(part))
        elif term != expression.strip() and len(split_terms(term)) > 1:
            found.extend(_operands(term))
        else:
            found.append(term)
    return found


def comparisons(expression: str) -> list[tuple[str, str, float, str]]:
    """``(metric, op, value, term)`` for each comparison of one context path with a number in ``expression``.

    >>> comparisons("has(drift.share_drifted) && drift.share_drifted > 0.3 && (0.05 <= performance.accuracy_drop"
    ...             " || carbon.intensity < carbon.forecast_min * 0.8)")
    [('drift.share_drifted', '>', 0.3, 'drift.share_drifted > 0.3'), ('performance.accuracy_drop', '>=', 0.05, '0.05 <= performance.accuracy_drop')]
    """
    found = []
    for term in _operands(expression):
        paths = referenced_paths(term)
        if len(paths) != 1:
            continue
        for pattern, mirrored in ((_LEFT, False), (_RIGHT, True)):
            match = pattern.match(term)
            if match is None or match.group("path").replace(" ", "") != format_path(paths[0]):
                continue
            op = _MIRROR[match.group("op")] if mirrored else match.group("op")
            found.append((format_path(paths[0]), op, float(match.group("number")), term))
            break
    return found


def thresholds_of(policy: LoadedPolicy) -> list[Threshold]:
    """Every comparison with a number in the policy's ``when`` and ``unless``."""
    spec = policy.policy.spec
    found = []
    for clause, expression in (("when", spec.when), ("unless", spec.unless)):
        for metric, op, value, term in comparisons(expression or ""):
            found.append(Threshold(metric=metric, op=op, value=value, policy=policy.name, clause=clause, term=term))
    return found


def load_thresholds(directory: Path, model: ManagedModel) -> tuple[list[Threshold], str | None]:
    """The thresholds of the policies in ``directory`` that select ``model``, and a problem to show (or None).

    A directory that cannot be read gives no thresholds and says why; files
    refused one by one are counted in the problem, the others still count.
    """
    result = load_policy_paths([Path(directory)], known_actions=None)
    if not result.policies and result.errors:
        return [], f"no policy thresholds drawn: {result.errors[0]}"
    problem = None
    if result.errors:
        refused = len({error.source for error in result.errors})
        problem = f"{refused} policy file(s) in {directory} could not be loaded; their thresholds are not drawn"
    found = []
    for policy in result.policies:
        if policy.policy.spec.mode != "off" and selects(policy, model):
            found.extend(thresholds_of(policy))
    return found, problem
