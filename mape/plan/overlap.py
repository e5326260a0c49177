"""Policies that can fight: two policies that may act on the same model in opposite ways, with nothing to rank them.

What it does: :func:`find_overlaps` checks every pair of loaded policies and
reports an :class:`Overlap` when all of these hold:

- **both act**: neither is ``mode: off`` or ``mode: dry-run`` (a dry-run
  policy never acts, so it cannot fight);
- **their selectors can match one model**: some model name matches a glob of
  each (:func:`glob_intersection` decides this exactly, and gives an example
  name), and no label is required with two different values;
- **their actions conflict**: the pair is in :data:`CONFLICTING_ACTIONS` (or
  in the ``conflicts`` passed in, e.g. what action plugins declare), or the
  action type is the same and the parameters differ;
- **no priority between them**: their ``spec.priority`` is equal, so only the
  planner's tie-break (safer action type, then name) decides, tick by tick;
- neither names the other's action in ``spec.never_with`` (an exclusion
  already says how they interact).

The conditions are not compared: whether two CEL conditions can hold at once
is not decidable in general, so two policies whose conditions never overlap in
practice are still reported (raise one's priority to say which wins; that
silences the report and documents the intent).

Who calls it: ``mape policy validate`` (warnings; errors with ``--strict``).

>>> glob_intersection("credit-*", "*-risk")
'credit-risk'
>>> glob_intersection("credit-*", "fraud-*") is None
True
"""

from __future__ import annotations

import json
from collections import deque
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Any

from mape.errors import PolicyError
from mape.plan.loader import LoadedPolicy
from mape.plan.positions import Position

__all__ = ["CONFLICTING_ACTIONS", "Overlap", "conflict", "find_overlaps", "glob_intersection", "selector_example"]

#: Pairs of action types that undo or contradict each other.
CONFLICTING_ACTIONS: frozenset[frozenset[str]] = frozenset({
    frozenset({"retrain", "rollback"}),  # a rollback undoes the promotion a retrain brings
    frozenset({"promote", "rollback"}),
    frozenset({"scale-up", "scale-down"}),
    frozenset({"scale_up", "scale_down"}),
})

#: Policies in these modes never act.
_QUIET_MODES = ("off", "dry-run")


# ---------------------------------------------------------------------------------------------- globs


@dataclass(frozen=True)
class _Chars:
    """A set of characters: the union of ``ranges`` (inclusive), or every other character when ``negated``."""

    ranges: tuple[tuple[str, str], ...]
    negated: bool = False

    def __contains__(self, char: str) -> bool:
        return any(lo <= char <= hi for lo, hi in self.ranges) != self.negated


_ANY = _Chars((), negated=True)
_STAR = None
_READABLE = "x0a-_."


def _class(body: str) -> _Chars:
    negated = body.startswith("!")
    if negated:
        body = body[1:]
    ranges: list[tuple[str, str]] = []
    k = 0
    while k < len(body):
        if k + 2 < len(body) and body[k + 1] == "-":
            if body[k] <= body[k + 2]:  # fnmatch drops an empty range such as z-a
                ranges.append((body[k], body[k + 2]))
            k += 3
        else:
            ranges.append((body[k], body[k]))
            k += 1
    return _Chars(tuple(ranges), negated)


def _tokens(pattern: str) -> list[_Chars | None]:
    """``pattern`` in :func:`fnmatch.fnmatchcase`'s syntax, one token per character it consumes (``None``: ``*``)."""
    tokens: list[_Chars | None] = []
    i, n = 0, len(pattern)
    while i < n:
        char = pattern[i]
        i += 1
        if char == "*":
            if tokens[-1:] != [_STAR]:
                tokens.append(_STAR)
        elif char == "?":
            tokens.append(_ANY)
        elif char == "[":
            j = i
            if j < n and pattern[j] == "!":
                j += 1
            if j < n and pattern[j] == "]":
                j += 1
            while j < n and pattern[j] != "]":
                j += 1
            if j >= n:
                tokens.append(_Chars((("[", "["),)))
            else:
                tokens.append(_class(pattern[i:j]))
                i = j + 1
        else:
            tokens.append(_Chars(((char, char),)))
    return tokens


def _common(a: _Chars, b: _Chars) -> str | None:
    """A character in both sets, preferring readable ones, or ``None`` (exact: candidates are range ends and their neighbours)."""
    candidates: list[str] = []
    for chars in (a, b):
        for lo, hi in chars.ranges:
            candidates += [lo, hi]
    candidates += list(_READABLE)
    for chars in (a, b):
        for lo, hi in chars.ranges:
            candidates += [chr(c) for c in (ord(lo) - 1, ord(hi) + 1) if 0 <= c <= 0x10FFFF]
    candidates += [chr(0), chr(0x10FFFF)]
    return next((c for c in candidates if c in a and c in b), None)


def glob_intersection(first: str, second: str) -> str | None:
    """A non-empty name that both globs match (``fnmatchcase`` syntax), or ``None`` when no name does.

    Exact, not sampled: a breadth-first search of the product of the two
    patterns' automata. Where one pattern, with its wildcards written as
    ``x``, is a name the other matches, that name is the example.

    >>> glob_intersection("*", "credit-risk"), glob_intersection("credit-[a-m]*", "credit-[n-z]*")
    ('credit-risk', None)
    >>> glob_intersection("[!a-y]?", "z*"), glob_intersection("m?", "[!a-y]*")
    ('zx', None)
    """
    for pattern in (first, second):
        plain = pattern.replace("*", "x").replace("?", "x")
        if plain and fnmatchcase(plain, first) and fnmatchcase(plain, second):
            return plain
    a, b = _tokens(first), _tokens(second)
    start = (0, 0, False)
    built = {start: ""}
    queue = deque([start])
    while queue:
        state = queue.popleft()
        i, j, nonempty = state
        if i == len(a) and j == len(b) and nonempty:
            return built[state]
        moves: list[tuple[tuple[int, int, bool], str]] = []
        if i < len(a) and a[i] is _STAR:
            moves.append(((i + 1, j, nonempty), ""))
        if j < len(b) and b[j] is _STAR:
            moves.append(((i, j + 1, nonempty), ""))
        if i < len(a) and j < len(b):
            char = _common(a[i] or _ANY, b[j] or _ANY)
            if char is not None:
                moves.append(((i if a[i] is _STAR else i + 1, j if b[j] is _STAR else j + 1, True), char))
        for target, char in moves:
            if target not in built:
                built[target] = built[state] + char
                queue.append(target)
    return None


def selector_example(first: LoadedPolicy, second: LoadedPolicy) -> tuple[str, dict[str, str]] | None:
    """A model (name, labels) both policies select, or ``None`` when their selectors exclude each other."""
    a, b = first.policy.spec.selector, second.policy.spec.selector
    if any(a.labels[key] != b.labels[key] for key in a.labels.keys() & b.labels.keys()):
        return None
    for pattern in a.models:
        for other in b.models:
            name = glob_intersection(pattern, other)
            if name is not None:
                return name, {**a.labels, **b.labels}
    return None


# ---------------------------------------------------------------------------------------------- actions


def _params(params: dict[str, Any]) -> str:
    return json.dumps(params, sort_keys=True) if params else "{}"


def conflict(first: LoadedPolicy, second: LoadedPolicy,
             conflicts: Collection[frozenset[str]] = CONFLICTING_ACTIONS) -> str | None:
    """Why the two policies' actions conflict, or ``None`` when they do not."""
    a, b = first.policy.spec.action, second.policy.spec.action
    if a.type == b.type:
        if a.params == b.params:
            return None
        return f"the same action {a.type} with different params ({_params(a.params)} and {_params(b.params)})"
    if frozenset({a.type, b.type}) in conflicts:
        return f"conflicting actions {a.type} and {b.type}"
    return None


def _excludes(policy: LoadedPolicy, action: str) -> bool:
    return any(getattr(exclusion, "action", None) == action
               for exclusion in getattr(policy.policy.spec, "never_with", None) or ())


@dataclass(frozen=True)
class Overlap:
    """Two policies that can fight over a model.

    Parameters
    ----------
    first, second : LoadedPolicy
        In the order they were given.
    model : str
        A model name both select (an example).
    labels : dict of str to str
        The labels that model needs for both selectors.
    reason : str
        How their actions conflict.
    """

    first: LoadedPolicy
    second: LoadedPolicy
    model: str
    labels: dict[str, str]
    reason: str

    @property
    def positions(self) -> tuple[Position | None, Position | None]:
        """Where each policy's ``spec.action.type`` is."""
        return self.first.position("spec.action.type"), self.second.position("spec.action.type")

    @property
    def message(self) -> str:
        _, there = self.positions
        other = f"{self.second.source}:{there}" if there else self.second.source
        labels = f" with labels {', '.join(f'{k}={v}' for k, v in sorted(self.labels.items()))}" if self.labels else ""
        return (f"policy {self.first.name!r} can fight policy {self.second.name!r} ({other}): both select "
                f"model {self.model!r}{labels} at priority {self.first.policy.spec.priority}, with {self.reason}; "
                f"give one a higher spec.priority, or narrow a spec.selector")

    def as_error(self) -> PolicyError:
        """The overlap as an error at the first policy's action (``mape policy validate --strict``)."""
        here, _ = self.positions
        return PolicyError(self.message, source=self.first.source, field="spec.action.type",
                           line=here.line if here else None, column=here.column if here else None)

    def __str__(self) -> str:
        return str(self.as_error())


def find_overlaps(policies: Sequence[LoadedPolicy] | Iterable[LoadedPolicy], *,
                  conflicts: Collection[frozenset[str]] = CONFLICTING_ACTIONS) -> list[Overlap]:
    """Every pair of policies that can fight (see the module's description), in the order given.

    Parameters
    ----------
    policies : sequence of LoadedPolicy
        The policy library, as loaded.
    conflicts : collection of frozenset of str
        Pairs of conflicting action types (default :data:`CONFLICTING_ACTIONS`).
    """
    acting = [p for p in policies if p.policy.spec.mode not in _QUIET_MODES]
    found: list[Overlap] = []
    for index, first in enumerate(acting):
        for second in acting[index + 1:]:
            if first.policy.spec.priority != second.policy.spec.priority:
                continue
            reason = conflict(first, second, conflicts)
            if reason is None or _excludes(first, second.action) or _excludes(second, first.action):
                continue
            example = selector_example(first, second)
            if example is None:
                continue
            found.append(Overlap(first, second, model=example[0], labels=example[1], reason=reason))
    return found
