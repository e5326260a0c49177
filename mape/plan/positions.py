"""Where a value is in a YAML file: the line and column of a field path, and of a character inside a scalar.

What it does: :func:`parse` reads a YAML text once into its node trees
(``yaml.SafeLoader``: every node keeps the start of its text) and the data
built from them. :func:`locate` maps a field path, as pydantic reports it
(``('spec', 'cooldown')``) or as we write it (``spec.when``), to the node it
names; :func:`within_scalar` maps an offset inside a scalar's value, such as
the column a CEL error gives, back to the file, through quotes, folded lines
and the indentation of block scalars. Positions are 1-based, as editors and
compilers show them.

Who calls it: :mod:`mape.plan.loader`, so that every
:class:`~mape.errors.PolicyError` names ``file:line:column``, and
:mod:`mape.plan.overlap`, to point at both policies of a pair.

>>> text = "spec:\\n  when: >-\\n    drift.share_drifted >\\n    0.3 && drift.shar\\n"
>>> [(root, data)] = parse(text)
>>> locate(root, ("spec", "when"))
Position(line=2, column=9)
>>> when = node_at(root, ("spec", "when"))
>>> data["spec"]["when"][29:], within_scalar(text, when, 29)
('drift.shar', Position(line=4, column=12))
"""

from __future__ import annotations

import re

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import yaml

__all__ = ["Position", "locate", "node_at", "parse", "position_of", "within_scalar"]


@dataclass(frozen=True)
class Position:
    """A place in a text file: 1-based line and column."""

    line: int
    column: int

    @classmethod
    def of(cls, mark: yaml.Mark) -> "Position":
        return cls(mark.line + 1, mark.column + 1)

    def __str__(self) -> str:
        return f"{self.line}:{self.column}"


def parse(text: str) -> list[tuple[yaml.Node, Any]]:
    """Every document of ``text`` as (node tree, data), in one pass; raises ``yaml.YAMLError``.

    Documents that are empty (no node) are left out; the data is what
    ``yaml.safe_load_all`` gives.
    """
    loader = yaml.SafeLoader(text)
    try:
        documents: list[tuple[yaml.Node, Any]] = []
        while loader.check_node():
            node = loader.get_node()
            documents.append((node, loader.construct_document(node)))
        return documents
    finally:
        loader.dispose()


def _child(node: yaml.Node, item: str | int) -> tuple[yaml.Node, yaml.Node] | None:
    """(key node, value node) of ``item`` in a mapping, (item, item) in a sequence; ``None`` when absent."""
    if isinstance(node, yaml.MappingNode):
        for key, value in reversed(node.value):  # a repeated key: the loader keeps the last
            if isinstance(key, yaml.ScalarNode) and key.value == str(item):
                return key, value
    elif isinstance(node, yaml.SequenceNode) and isinstance(item, int) and 0 <= item < len(node.value):
        return node.value[item], node.value[item]
    return None


def _steps(path: Sequence[str | int] | str) -> Sequence[str | int]:
    """Keys and indexes of a path: a sequence as is, or a string such as ``spec.alternatives[0].when``."""
    if not isinstance(path, str):
        return path
    steps: list[str | int] = []
    for part in path.split("."):
        name, _, rest = part.partition("[")
        if name:
            steps.append(name)
        if rest:
            steps.extend(int(index) for index in re.findall(r"(\d+)\]", "[" + rest))
    return steps


def node_at(root: yaml.Node, path: Sequence[str | int] | str) -> yaml.Node | None:
    """The value node at ``path`` (a sequence of keys and indexes, or a dotted string); ``None`` if absent."""
    node = root
    for item in _steps(path):
        found = _child(node, item)
        if found is None:
            return None
        node = found[1]
    return node


def locate(root: yaml.Node, path: Sequence[str | int] | str, *, key: bool = False) -> Position:
    """Where ``path`` is: its value, or its key with ``key=True`` (an unknown field is its key).

    A path that is not in the file (a missing field) points at the key of the
    deepest part that is (``spec`` for a missing ``spec.when``), else at the
    start of the document.
    """
    node, key_node = root, None
    for item in _steps(path):
        found = _child(node, item)
        if found is None:
            return Position.of((key_node or node).start_mark)
        key_node, node = found
    return Position.of((key_node if key and key_node is not None else node).start_mark)


def position_of(text: str, path: Sequence[str | int] | str, *, key: bool = False) -> Position | None:
    """:func:`locate` in the first document of ``text``; ``None`` if it is not YAML or has no document."""
    try:
        documents = parse(text)
    except yaml.YAMLError:
        return None
    return locate(documents[0][0], path, key=key) if documents else None


def within_scalar(text: str, node: yaml.Node, offset: int) -> Position:
    """Where character ``offset`` of a scalar's value is in ``text``, the text the node was parsed from.

    The value and its source differ by the quotes, escapes, folded line breaks
    and block indentation; they are walked side by side, a run of white space
    in the value matching a run of white space (line breaks included) in the
    source. Where they cannot be matched (an escape sequence, say), the
    position is the scalar's start.
    """
    start = Position.of(node.start_mark)
    if not isinstance(node, yaml.ScalarNode) or offset <= 0:
        return start
    raw = text[node.start_mark.index:node.end_mark.index]
    value: str = node.value
    i = 0
    if node.style in ("|", ">"):
        i = raw.find("\n") + 1  # the header line (`>-`, `|2`) holds no value
        if i == 0:
            return start
    elif node.style in ("'", '"'):
        i = 1
    j = 0
    target = min(offset, len(value.rstrip()))  # past the end (a block's final line break): just after the last character
    while j < target:
        if value[j].isspace():
            while j < target and value[j].isspace():
                j += 1
            while i < len(raw) and raw[i].isspace():
                i += 1
            continue
        while i < len(raw) and raw[i] != value[j]:
            if not (raw[i].isspace() or (node.style == "'" and raw[i] == "'") or (node.style == '"' and raw[i] == "\\")):
                return start
            i += 1
        if i >= len(raw):
            return start
        i += 1
        j += 1
    if j < len(value) and not value[j].isspace():
        while i < len(raw) and raw[i].isspace():
            i += 1
    lines = raw.count("\n", 0, i)
    if not lines:
        return Position(start.line, start.column + i)
    return Position(start.line + lines, i - raw.rfind("\n", 0, i))
