"""Reading policy files: validate each one alone, refuse the bad ones, keep the rest.

What it does: :func:`load_policies` reads every policy file of a directory
(see :func:`is_policy_file` for which files count) and returns the loaded
policies with their compiled conditions, plus one :class:`~mape.errors.PolicyError`
per problem, each naming the file and the field path::

    policies/bad.yaml: spec.action.type: unknown action 'retrian' (did you mean 'retrain'?); known: retrain, rollback

A file is refused when it is not YAML, holds anything but exactly one mapping,
fails validation against :class:`~mape.plan.policy.Policy`, has a CEL syntax
error, names a variable that is not a context root, names an action type that
is not registered, or repeats another file's ``metadata.name`` (the file that
sorts later is refused, naming both). Refusing one file never stops the
others from loading.

Who calls it: the controller at start and on reload (then
:func:`record_policies` stores each version in the knowledge base); ``mape
policy validate`` (directory or single file, :func:`load_policy_text`); tests.
"""

from __future__ import annotations

import difflib
import typing
import hashlib
import os
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError
from sqlmodel import Session

from knowledge import queries
from knowledge.tables import PolicyVersion
from mape.errors import PolicyError
from mape.plan.expressions import CONTEXT_ROOTS, Condition, ConditionError
from mape.plan.policy import Policy

POLICY_SUFFIXES = (".yaml", ".yml")
#: Second suffixes of YAML files that live next to policies but are not policies.
NON_POLICY_MARKERS = (".test", ".schema")


@dataclass(frozen=True)
class LoadedPolicy:
    """A validated policy with its compiled conditions and the text it came from.

    Parameters
    ----------
    policy : Policy
        The validated document.
    when : Condition
        Compiled ``spec.when``.
    unless : Condition or None
        Compiled ``spec.unless``.
    source : str
        The file (or other source) it was read from.
    text : str
        The exact text, stored as the policy version.
    sha256 : str
        Hex SHA-256 of ``text`` (UTF-8): decisions name it.
    """

    policy: Policy
    when: Condition
    unless: Condition | None
    source: str
    text: str
    sha256: str

    @property
    def name(self) -> str:
        return self.policy.metadata.name

    @property
    def action(self) -> str:
        return self.policy.spec.action.type

    def __str__(self) -> str:
        return f"policy {self.name} ({self.source})"


@dataclass
class PolicyLoadResult:
    """What :func:`load_policies` found: the policies that loaded and the errors of those that did not.

    Parameters
    ----------
    policies : list of LoadedPolicy
        In file order.
    errors : list of PolicyError
        One per problem; a refused file may have several.
    """

    policies: list[LoadedPolicy] = field(default_factory=list)
    errors: list[PolicyError] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors

    def by_name(self) -> dict[str, LoadedPolicy]:
        return {p.name: p for p in self.policies}

    def __str__(self) -> str:
        return f"{len(self.policies)} policies loaded, {len(self.errors)} errors"


def is_policy_file(path: Path) -> bool:
    """Whether a directory entry is read as a policy.

    The rule: a ``*.yaml`` or ``*.yml`` file directly in the directory, whose
    name starts with neither ``_`` nor ``.`` (drafts, editor files) and does
    not end in ``.test.yaml`` / ``.schema.yaml`` (policy tests, schemas; the
    same with ``.yml``). JSON files (``policy.schema.json``) and README files
    are never read.

    >>> [is_policy_file(Path(n)) for n in ("retrain.yaml", "_draft.yaml", "retrain.test.yaml", "README.md")]
    [True, False, False, False]
    """
    name = path.name
    if path.suffix not in POLICY_SUFFIXES or name.startswith(("_", ".")):
        return False
    return Path(path.stem).suffix not in NON_POLICY_MARKERS


_PATTERN_MESSAGES = {
    "metadata.name": "must be a DNS label: lowercase letters, digits and '-', "
                     "starting and ending with a letter or digit, at most 63 characters",
    "spec.action.type": "must be lowercase letters, digits, '_' and '-', starting with a letter",
}


def _location(loc: Sequence[Any]) -> str:
    parts: list[str] = []
    for item in loc:
        parts.append(f"[{item}]" if isinstance(item, int) else ("." if parts else "") + str(item))
    return "".join(parts)


def _model_at(loc: Sequence[Any]) -> type[BaseModel] | None:
    """The pydantic model whose field ``loc[-1]`` is, for suggesting field names.

    ``loc`` holds the names as written in YAML (aliases such as ``for``);
    optional sub-models (``rate_limit: RateLimit | None``) are unwrapped.
    """
    model: type[BaseModel] = Policy
    for item in loc[:-1]:
        info = next((f for name, f in model.model_fields.items() if (f.alias or name) == str(item)), None)
        if info is None:
            return None
        candidates = [info.annotation, *typing.get_args(info.annotation)]
        sub = next((c for c in candidates if isinstance(c, type) and issubclass(c, BaseModel)), None)
        if sub is None:
            return None
        model = sub
    return model


def _yaml_names(model: type[BaseModel]) -> list[str]:
    """The field names a policy author writes: aliases where a field has one (``for``, not ``for_``)."""
    return sorted(info.alias or name for name, info in model.model_fields.items())


def _validation_errors(exc: ValidationError, source: str) -> list[PolicyError]:
    errors: list[PolicyError] = []
    for error in exc.errors():
        loc = error["loc"]
        where = _location(loc) or None
        value = error.get("input")
        message = error["msg"]
        if error["type"] == "extra_forbidden":
            model = _model_at(loc)
            allowed = _yaml_names(model) if model is not None else []
            close = difflib.get_close_matches(str(loc[-1]), allowed, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            message = f"unknown field{hint}; allowed here: {', '.join(allowed)}"
            value = None
        elif error["type"] == "missing":
            value = None
        elif error["type"] == "string_pattern_mismatch" and where in _PATTERN_MESSAGES:
            message = _PATTERN_MESSAGES[where]
        elif message.startswith("Value error, "):
            message = message[len("Value error, "):]
        if isinstance(value, (dict, list)) or (value is not None and repr(value) in message):
            value = None
        errors.append(PolicyError(message, source=source, field=where, value=value))
    return errors


def _yaml_problem(exc: yaml.YAMLError) -> str:
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or " ".join(str(exc).split())
    if mark is None:
        return problem
    return f"line {mark.line + 1}, column {mark.column + 1}: {problem}"


def _compile(expression: str | None, field_path: str, source: str, errors: list[PolicyError]) -> Condition | None:
    if expression is None:
        return None
    try:
        return Condition(expression, roots=CONTEXT_ROOTS)
    except ConditionError as exc:
        errors.append(PolicyError(str(exc), source=source, field=field_path))
        return None


def _check_text(text: str, source: str, known_actions: Collection[str] | None) -> tuple[LoadedPolicy | None,
                                                                                         list[PolicyError]]:
    try:
        documents = [d for d in yaml.safe_load_all(text) if d is not None]
    except yaml.YAMLError as exc:
        return None, [PolicyError(f"not valid YAML: {_yaml_problem(exc)}", source=source)]
    if len(documents) != 1:
        what = "no document" if not documents else f"{len(documents)} documents"
        return None, [PolicyError(f"a policy file holds exactly one policy document; found {what}", source=source)]
    data = documents[0]
    if not isinstance(data, dict):
        return None, [PolicyError("a policy document must be a mapping with apiVersion, kind, metadata and spec",
                                  source=source, value=type(data).__name__)]
    try:
        policy = Policy.model_validate(data)
    except ValidationError as exc:
        return None, _validation_errors(exc, source)
    errors: list[PolicyError] = []
    when = _compile(policy.spec.when, "spec.when", source, errors)
    unless = _compile(policy.spec.unless, "spec.unless", source, errors)
    action = policy.spec.action.type
    if known_actions is not None and action not in known_actions:
        close = difflib.get_close_matches(action, list(known_actions), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        known = ", ".join(sorted(known_actions)) or "(none registered)"
        errors.append(PolicyError(f"unknown action {action!r}{hint}; known: {known}", source=source,
                                  field="spec.action.type"))
    if errors or when is None:
        return None, errors
    sha = hashlib.sha256(text.encode("utf-8")).hexdigest()
    return LoadedPolicy(policy=policy, when=when, unless=unless, source=source, text=text, sha256=sha), []


def load_policy_text(text: str, source: str | os.PathLike[str] = "<text>", *,
                     known_actions: Collection[str] | None = None) -> LoadedPolicy:
    """Validate and compile one policy document.

    Parameters
    ----------
    text : str
        The YAML text of one policy.
    source : str or path
        Named in errors and kept as the policy's source (a file path, ``<stdin>``, ...).
    known_actions : collection of str, optional
        Registered action types; ``None`` skips the action check (e.g. a CLI
        run without the action registry).

    Raises
    ------
    PolicyError
        The first problem found, naming ``source`` and the field path.
    """
    loaded, errors = _check_text(text, os.fspath(source), known_actions)
    if errors:
        raise errors[0]
    assert loaded is not None
    return loaded


def load_policies(directory: Path, *, known_actions: Collection[str]) -> PolicyLoadResult:
    """Load every policy file of ``directory`` (see :func:`is_policy_file`), in name order.

    Parameters
    ----------
    directory : Path
        The policy library, e.g. ``policies/``; not searched recursively.
    known_actions : collection of str
        Registered action types; a policy naming another is refused.

    Returns
    -------
    PolicyLoadResult
        The policies that loaded and one :class:`~mape.errors.PolicyError`
        per problem of the files that did not. A missing directory is one
        error and no policies.
    """
    directory = Path(directory)
    result = PolicyLoadResult()
    if not directory.is_dir():
        result.errors.append(PolicyError("not a directory of policies", source=str(directory)))
        return result
    seen: dict[str, LoadedPolicy] = {}
    for path in sorted(p for p in directory.iterdir() if p.is_file() and is_policy_file(p)):
        source = str(path)
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            result.errors.append(PolicyError(f"cannot read the file: {exc}", source=source))
            continue
        loaded, errors = _check_text(text, source, known_actions)
        if loaded is not None and loaded.name in seen:
            first = seen[loaded.name]
            errors = [PolicyError(f"duplicate policy name {loaded.name!r}: already defined in {first.source}",
                                  source=source, field="metadata.name")]
            loaded = None
        result.errors.extend(errors)
        if loaded is not None:
            seen[loaded.name] = loaded
            result.policies.append(loaded)
    return result


def record_policies(session: Session, policies: Iterable[LoadedPolicy], *,
                    actor: str = "controller") -> list[PolicyVersion]:
    """Store every loaded policy version in the knowledge base (once per name and sha256, audited)."""
    return [
        queries.record_policy_version(session, name=p.name, text=p.text, source=p.source,
                                      author=p.policy.metadata.owner, actor=actor)
        for p in policies
    ]
