"""Reading policy files: validate each one alone, refuse the bad ones, keep the rest.

What it does: :func:`load_policies` reads every policy file of a directory
(see :func:`is_policy_file` for which files count), :func:`load_policy_paths`
any mix of files and directories, and both return the loaded policies with
their compiled conditions, plus one :class:`~mape.errors.PolicyError` per
problem, each naming the file, the line and column, and the field path::

    policies/bad.yaml:9:11: spec.action.type: unknown action 'retrian' (did you mean 'retrain'?); known: retrain, rollback

A file is refused when it is not YAML (PyYAML's own failures on deep nesting
or bad explicit tags included), holds anything but exactly one mapping, holds
more than :data:`MAX_VALUES` values once aliases are followed or a NUL
character, fails validation against :class:`~mape.plan.policy.Policy`, has a CEL syntax
error, names a variable that is not a context root or a field the context does
not declare, names an action type that is not registered, gives that action
parameters its parameter model refuses, or repeats another file's
``metadata.name`` (the file that sorts later is refused, naming both). Refusing
one file never stops the others from loading. Lines and columns come from the
YAML node tree (:mod:`mape.plan.positions`); a CEL error points at the
character the compiler or the field check names, inside the expression.

The actions are known as a collection of names, or as a mapping from each name
to the pydantic model of its parameters (the execute stage's registry gives
one: :meth:`mape.execute.registry.ActionRegistry.params_models`; this package
never imports the execute stage, the caller passes the mapping).

Who calls it: the controller at start and on reload (then
:func:`record_policies` stores each version in the knowledge base); ``mape
policy validate`` and ``mape policy test``; tests.
"""

from __future__ import annotations

import difflib
import hashlib
import os
import typing
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any, Union

import yaml
from pydantic import BaseModel, ValidationError
from sqlmodel import Session

from knowledge import queries
from knowledge.tables import PolicyVersion
from mape.errors import PolicyError, shown
from mape.plan import positions
from mape.plan.expressions import CONTEXT_ROOTS, Condition, ConditionError
from mape.plan.policy import Policy
from mape.plan.positions import Position

#: The registered actions: their names, or each name with the pydantic model of its
#: ``params`` (``None``: parameters not checked at load).
KnownActions = Union[Collection[str], Mapping[str, Union[type[BaseModel], None]]]

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
    #: ``metadata.name`` (read tens of thousands of times a planning pass: a plain attribute).
    name: str = field(init=False)
    #: ``spec.action.type``.
    action: str = field(init=False)
    #: Whether the policy keeps ``for``/``keep_firing_for`` state (one of the two durations is above zero).
    stateful: bool = field(init=False)

    def __post_init__(self) -> None:
        spec = self.policy.spec
        object.__setattr__(self, "name", self.policy.metadata.name)
        object.__setattr__(self, "action", spec.action.type)
        object.__setattr__(self, "stateful", spec.for_ > timedelta(0) or spec.keep_firing_for > timedelta(0))

    def position(self, path: Sequence[str | int] | str, *, key: bool = False) -> Position | None:
        """Where ``path`` (``spec.action.type``) is in the policy's text; see :func:`mape.plan.positions.locate`."""
        return positions.position_of(self.text, path, key=key)

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
    sources : list of str
        Every file read (loaded or refused).
    """

    policies: list[LoadedPolicy] = field(default_factory=list)
    errors: list[PolicyError] = field(default_factory=list)
    #: The files read, in order.
    sources: list[str] = field(default_factory=list)

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


def _model_at(loc: Sequence[Any], root: type[BaseModel] = Policy) -> type[BaseModel] | None:
    """The pydantic model whose field ``loc[-1]`` is, for suggesting field names.

    ``loc`` holds the names as written in YAML (aliases such as ``for``);
    optional sub-models (``rate_limit: RateLimit | None``) and lists of them
    (``steps: list[CanaryStep]``) are unwrapped.
    """
    model: type[BaseModel] = root
    for item in loc[:-1]:
        if isinstance(item, int):
            continue  # an item of a list field: the list's element model was taken at the field
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


class _Document:
    """One policy text being checked: makes errors that name its source, line and column."""

    def __init__(self, source: str, text: str, root: yaml.Node | None = None) -> None:
        self.source = source
        self.text = text
        self.root = root

    def error(self, message: str, where: str | None = None, *, path: Sequence[str | int] | None = None,
              key: bool = False, value: Any = None, at: Position | None = None) -> PolicyError:
        """A :class:`PolicyError` at ``at``, else at ``path`` (default: the dotted ``where``) in the tree."""
        if at is None and self.root is not None:
            steps = path if path is not None else (where.split(".") if where else ())
            at = positions.locate(self.root, steps, key=key)
        return PolicyError(message, source=self.source, field=where, value=value,
                           line=at.line if at else None, column=at.column if at else None)


def _validation_errors(exc: ValidationError, document: _Document, *, model: type[BaseModel] = Policy,
                       prefix: tuple[str | int, ...] = (), action: str | None = None) -> list[PolicyError]:
    """One error per pydantic error; ``prefix`` and ``action`` for the parameters of an action."""
    errors: list[PolicyError] = []
    for error in exc.errors():
        inner = tuple(error["loc"])
        loc = prefix + inner
        where = _location(loc) or None
        value = error.get("input")
        message = error["msg"]
        key = False
        if error["type"] == "extra_forbidden":
            owner = _model_at(inner, model)
            allowed = _yaml_names(owner) if owner is not None else []
            close = difflib.get_close_matches(str(loc[-1]), allowed, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            if action is not None and owner is model:
                message = f"unknown parameter{hint}; {action} takes: {', '.join(allowed) or 'no parameters'}"
            else:
                message = f"unknown field{hint}; allowed here: {', '.join(allowed)}"
            value = None
            key = True
        elif error["type"] == "missing":
            value = None
        elif error["type"] == "string_pattern_mismatch" and where in _PATTERN_MESSAGES:
            message = _PATTERN_MESSAGES[where]
        elif message.startswith("Value error, "):
            message = message[len("Value error, "):]
        if isinstance(value, (dict, list)) or (value is not None and shown(value, limit=10**6) in message):
            value = None
        errors.append(document.error(message, where, path=loc, key=key, value=value))
    return errors


def _parse(text: str, source: str) -> tuple[tuple[yaml.Node, Any] | None, list[PolicyError]]:
    try:
        documents = [(node, data) for node, data in positions.parse(text) if data is not None]
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        problem = getattr(exc, "problem", None) or " ".join(str(exc).split())
        at = Position.of(mark) if mark is not None else None
        return None, [_Document(source, text).error(f"not valid YAML: {problem}", at=at)]
    except RecursionError:
        return None, [_Document(source, text).error("not valid YAML: nested too deeply")]
    except (ValueError, TypeError, AttributeError, OverflowError) as exc:  # PyYAML's constructors: `!!float x`
        message = str(exc) if len(str(exc)) <= 240 else f"{str(exc)[:200]}... ({len(str(exc))} characters)"
        return None, [_Document(source, text).error(f"not valid YAML: a value cannot be read: {message}")]
    if len(documents) != 1:
        what = "no document" if not documents else f"{len(documents)} documents"
        at = Position.of(documents[1][0].start_mark) if len(documents) > 1 else None
        return None, [_Document(source, text).error(
            f"a policy file holds exactly one policy document; found {what}", at=at)]
    return documents[0], []


#: How many values (keys, items, scalars) a policy document may hold once YAML aliases are followed: an alias
#: repeats its anchor's subtree, so a file of a few lines can stand for billions of values. Real policies hold
#: a few dozen.
MAX_VALUES = 10_000


def _unstorable(data: Any) -> tuple[str, tuple[str | int, ...]] | None:
    """The first reason a parsed document cannot be a policy before validation, with its path; ``None`` if none.

    More than :data:`MAX_VALUES` values (an alias bomb, or an alias to itself),
    or a NUL character, which the knowledge base cannot store (PostgreSQL text
    refuses it).
    """
    Link = tuple[str | int, Any] | None  # (last step, the parent's link): paths shared, not copied
    stack: list[tuple[Link, Any]] = [(None, data)]
    count = 0
    while stack:
        link, value = stack.pop()
        count += 1
        if count > MAX_VALUES:
            return f"the document is too large: more than {MAX_VALUES} values once YAML aliases are followed", ()
        if isinstance(value, str) and "\x00" in value:
            path: list[str | int] = []
            while link is not None:
                path.append(link[0])
                link = link[1]
            return "NUL characters (\\0) are not allowed: the knowledge base cannot store them", tuple(reversed(path))
        if isinstance(value, dict):
            for key, item in value.items():
                child = (key if isinstance(key, str) else shown(key), link)
                stack.append((child, key))
                stack.append((child, item))
        elif isinstance(value, (list, tuple, set, frozenset)):
            stack.extend(((index, link), item) for index, item in enumerate(value))
    return None


def _compile(document: _Document, expression: str | None, where: str,
             errors: list[PolicyError]) -> Condition | None:
    if expression is None:
        return None
    try:
        return Condition(expression, roots=CONTEXT_ROOTS)
    except ConditionError as exc:
        node = positions.node_at(document.root, where) if document.root is not None else None
        at = positions.within_scalar(document.text, node, exc.offset or 0) if node is not None else None
        errors.append(document.error(str(exc), where, at=at))
        return None


def _check_action(document: _Document, action: str, params: dict[str, Any], known_actions: KnownActions | None,
                  errors: list[PolicyError], where: tuple[str | int, ...] = ("spec", "action"),
                  verify: bool | None = None) -> None:
    """The action type is registered and its params fit its parameter model; ``where`` is the action's path.

    With ``verify`` known (whether the policy has ``spec.verify``), parameters
    whose model says they need it (a ``verify_required`` property giving the
    parameter's path and why, as ``retrain``'s ``canary`` does) are an error
    in a policy without it.
    """
    if known_actions is None:
        return
    field = _location(where)
    if action not in known_actions:
        close = difflib.get_close_matches(action, list(known_actions), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        known = ", ".join(sorted(known_actions)) or "(none registered)"
        errors.append(document.error(f"unknown action {action!r}{hint}; known: {known}", f"{field}.type",
                                     path=(*where, "type")))
        return
    model = known_actions.get(action) if isinstance(known_actions, Mapping) else None
    if model is None:
        return
    try:
        validated = model.model_validate(params)
        needs = getattr(validated, "verify_required", None) if verify is False else None
        if needs is not None:
            path, why = needs
            errors.append(document.error(why, _location((*where, "params", *path)), path=(*where, "params", *path)))
    except ValidationError as exc:
        errors.extend(_validation_errors(exc, document, model=model, prefix=(*where, "params"),
                                         action=action))
    except Exception as exc:  # noqa: BLE001 - a plugin's validator may raise anything; the file is refused, not the loop
        errors.append(document.error(f"the parameter model of {action} failed: {type(exc).__name__}: {exc}",
                                     f"{field}.params", path=(*where, "params")))


def _in_file_order(errors: list[PolicyError]) -> list[PolicyError]:
    return sorted(errors, key=lambda e: (e.line or 0, e.column or 0))


def _check_the_rest(document: _Document, data: dict[Any, Any], known_actions: KnownActions | None,
                    errors: list[PolicyError]) -> None:
    """After schema errors, still check the conditions and the action where the schema found them well formed.

    So one run of ``mape policy validate`` reports a typo in a field name and
    one in the condition together.
    """
    spec = data.get("spec")
    if not isinstance(spec, dict):
        return
    wrong = [e.field or "" for e in errors]

    def clean(where: str) -> bool:
        return not any(f == where or f.startswith(where + ".") for f in wrong)

    for where in ("when", "unless"):
        if isinstance(spec.get(where), str) and spec[where] and clean(f"spec.{where}"):
            _compile(document, spec[where], f"spec.{where}", errors)
    action = spec.get("action")
    if isinstance(action, dict) and isinstance(action.get("type"), str) and clean("spec.action"):
        _check_action(document, action["type"], action.get("params") or {}, known_actions, errors)


def _check_text(text: str, source: str, known_actions: KnownActions | None) -> tuple[LoadedPolicy | None,
                                                                                   list[PolicyError]]:
    parsed, errors = _parse(text, source)
    if parsed is None:
        return None, errors
    root, data = parsed
    document = _Document(source, text, root)
    if not isinstance(data, dict):
        return None, [document.error("a policy document must be a mapping with apiVersion, kind, metadata and spec",
                                     value=type(data).__name__, at=Position.of(root.start_mark))]
    problem = _unstorable(data)
    if problem is not None:
        message, path = problem
        return None, [document.error(message, _location(path) or None, path=path)]
    try:
        policy = Policy.model_validate(data)
    except ValidationError as exc:
        errors = _validation_errors(exc, document)
        _check_the_rest(document, data, known_actions, errors)
        return None, _in_file_order(errors)
    when = _compile(document, policy.spec.when, "spec.when", errors)
    unless = _compile(document, policy.spec.unless, "spec.unless", errors)
    if policy.spec.verify is not None:
        _compile(document, policy.spec.verify.expect, "spec.verify.expect", errors)
    verify = policy.spec.verify is not None
    _check_action(document, policy.spec.action.type, policy.spec.action.params, known_actions, errors, verify=verify)
    for index, alternative in enumerate(policy.spec.alternatives):
        _compile(document, alternative.when, f"spec.alternatives[{index}].when", errors)
        _check_action(document, alternative.action.type, alternative.action.params, known_actions, errors,
                      where=("spec", "alternatives", index, "action"), verify=verify)
    if errors or when is None:
        return None, _in_file_order(errors)
    sha = hashlib.sha256(text.encode("utf-8")).hexdigest()
    return LoadedPolicy(policy=policy, when=when, unless=unless, source=source, text=text, sha256=sha), []


def check_policy_text(text: str, source: str | os.PathLike[str] = "<text>", *,
                      known_actions: KnownActions | None = None) -> tuple[LoadedPolicy | None, list[PolicyError]]:
    """Validate and compile one policy document, returning every problem instead of raising the first.

    Returns
    -------
    (LoadedPolicy or None, list of PolicyError)
        The policy when it loads (and no errors), else ``None`` and its errors.
    """
    return _check_text(text, os.fspath(source), known_actions)


def load_policy_text(text: str, source: str | os.PathLike[str] = "<text>", *,
                     known_actions: KnownActions | None = None) -> LoadedPolicy:
    """Validate and compile one policy document.

    Parameters
    ----------
    text : str
        The YAML text of one policy.
    source : str or path
        Named in errors and kept as the policy's source (a file path, ``<stdin>``, ...).
    known_actions : collection of str, or mapping of str to a pydantic model, optional
        Registered action types; with a mapping, ``spec.action.params`` is
        also validated against the action's parameter model. ``None`` skips
        the action check (e.g. a CLI run without the action registry).

    Raises
    ------
    PolicyError
        The first problem found, naming ``source``, the line and column, and the field path.
    """
    loaded, errors = _check_text(text, os.fspath(source), known_actions)
    if errors:
        raise errors[0]
    assert loaded is not None
    return loaded


def _load_files(files: Iterable[Path], known_actions: KnownActions | None, result: PolicyLoadResult) -> None:
    seen: dict[str, LoadedPolicy] = {}
    for path in files:
        source = str(path)
        result.sources.append(source)
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            result.errors.append(PolicyError(f"cannot read the file: {exc}", source=source))
            continue
        loaded, errors = _check_text(text, source, known_actions)
        if loaded is not None and loaded.name in seen:
            first = seen[loaded.name]
            at = loaded.position("metadata.name")
            errors = [PolicyError(f"duplicate policy name {loaded.name!r}: already defined in {first.source}",
                                  source=source, field="metadata.name", line=at.line if at else None,
                                  column=at.column if at else None)]
            loaded = None
        result.errors.extend(errors)
        if loaded is not None:
            seen[loaded.name] = loaded
            result.policies.append(loaded)


def _policy_files(directory: Path) -> list[Path]:
    return sorted(p for p in directory.iterdir() if p.is_file() and is_policy_file(p))


def load_policies(directory: Path, *, known_actions: KnownActions) -> PolicyLoadResult:
    """Load every policy file of ``directory`` (see :func:`is_policy_file`), in name order.

    Parameters
    ----------
    directory : Path
        The policy library, e.g. ``policies/``; not searched recursively.
    known_actions : collection of str, or mapping of str to a pydantic model
        Registered action types; a policy naming another is refused. With a
        mapping (name to parameter model), a policy whose ``spec.action.params``
        the model refuses is refused too.

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
    _load_files(_policy_files(directory), known_actions, result)
    return result


def load_policy_paths(paths: Iterable[Path], *, known_actions: KnownActions | None) -> PolicyLoadResult:
    """Load policy files and directories of them together, as :func:`load_policies` loads one directory.

    A directory contributes its policy files (:func:`is_policy_file`); a file
    named explicitly is read whatever its name. A file given twice is read
    once; policy names must be unique across everything given. A path that
    does not exist is one error.

    Who calls it: ``mape policy validate``.
    """
    result = PolicyLoadResult()
    files: list[Path] = []
    for path in map(Path, paths):
        if path.is_dir():
            files.extend(_policy_files(path))
        elif path.is_file():
            files.append(path)
        else:
            result.errors.append(PolicyError("no such file or directory", source=str(path)))
    unique = {os.path.realpath(f): f for f in reversed(files)}  # the first mention of each file wins
    _load_files([f for f in files if unique[os.path.realpath(f)] is f], known_actions, result)
    return result


def record_policies(session: Session, policies: Iterable[LoadedPolicy], *,
                    actor: str = "controller") -> list[PolicyVersion]:
    """Store every loaded policy version in the knowledge base (once per name and sha256, audited)."""
    return [
        queries.record_policy_version(session, name=p.name, text=p.text, source=p.source,
                                      author=p.policy.metadata.owner, actor=actor)
        for p in policies
    ]
