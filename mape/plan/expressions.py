"""CEL conditions of policies: compiled once at load, evaluated every tick.

What it does: :class:`Condition` compiles a CEL string (the ``when`` and
``unless`` of a policy) with the ``common-expression-language`` package,
checks at load that it names only the roots of the evaluation context
(:data:`CONTEXT_ROOTS`) and only their declared fields
(:data:`mape.plan.fields.CONTEXT_FIELDS`), suggesting the nearest name for a
typo, and evaluates
it against one model's context, insisting on a boolean result.

Who calls it: :mod:`mape.plan.loader` builds conditions (turning
:class:`ConditionError` into a :class:`~mape.errors.PolicyError` naming the
file and field); :class:`mape.plan.planner.Planner` evaluates them and turns
evaluation failures into reported, non-firing outcomes: a missing signal is
never a reason to act.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Collection, Mapping
from typing import Any

import cel

from mape.errors import ConditionError
from mape.plan.fields import CONTEXT_FIELDS, RootFields, blank_strings, check_paths

__all__ = ["CONTEXT_ROOTS", "Condition", "ConditionError", "prepare"]

#: The top-level names of the evaluation context (see :func:`mape.plan.context.build_context`).
CONTEXT_ROOTS: tuple[str, ...] = tuple(CONTEXT_FIELDS)

# Comprehension macros bind a variable that references() reports like a context name:
# ``list.exists(x, ...)``, ``map.all(k, v, ...)``.
_BOUND_VARIABLES = re.compile(
    r"\.\s*(?:all|exists|exists_one|existsOne|map|filter|transformList|transformMap)\s*\(\s*"
    r"([A-Za-z_][A-Za-z0-9_]*)\s*,(?:\s*([A-Za-z_][A-Za-z0-9_]*)\s*,)?"
)
#: The longest condition accepted. The CEL interpreter recurses once per operator of a chain such as
#: ``a + b + c + ...``, and about 15,000 of them overflow its stack and kill the process (measured:
#: ``cel`` 0.10 on an 8 MiB stack). 4,096 characters hold at most about 2,000 operators; real conditions are
#: a few hundred characters.
MAX_EXPRESSION_LENGTH = 4096
_PARSE_PREFIX = re.compile(r"^Failed to parse expression .*?: (?=ERROR)", re.DOTALL)
_SYNTAX_AT = re.compile(r"\bat (\d+):(\d+):")


def _bound_variables(expression: str) -> set[str]:
    names: set[str] = set()
    for match in _BOUND_VARIABLES.finditer(expression):
        names.update(name for name in match.groups() if name)
    return names


def _first_error(detail: str, *, width: int = 120) -> str:
    r"""The parser's first error, with its source line and caret cut to ``width`` characters around the caret.

    The CEL parser reports every error with the whole source line under it,
    so a long expression with several errors made a message of thousands of
    characters; the first error is the one to fix, and the count says how
    many more there are.

    >>> print(_first_error("at 1:3: bad\n| a b\n| ..^\nat 1:5: worse\n| a b\n| ....^"))
    at 1:3: bad
    | a b
    | ..^
    (and 1 more error)
    >>> print(_first_error("at 1:300: bad\n| " + "x" * 400 + "\n| " + "." * 299 + "^", width=20))
    at 1:300: bad
    | …xxxxxxxxxxxxxxxxxxxx…
    | …..........^
    """
    lines = detail.splitlines()
    starts = [i for i, line in enumerate(lines) if _SYNTAX_AT.match(line)]
    if not starts:
        return detail[:1000]
    end = starts[1] if len(starts) > 1 else len(lines)
    block = lines[starts[0]:end]
    caret = next((line.index("^") for line in block if line.startswith("| ") and line.rstrip().endswith("^")), None)
    if caret is not None:
        left = max(2, caret - width // 2)
        cut = []
        for line in block:
            if line.startswith("| ") and len(line) > width:
                body = line[left:left + width]
                cut.append("| " + ("…" if left > 2 else "") + body + ("…" if left + width < len(line) else ""))
            else:
                cut.append(line[:1000])
        block = cut
    more = len(starts) - 1
    return "\n".join(block) + (f"\n(and {more} more error{'s' if more > 1 else ''})" if more else "")


def _syntax_error_offset(expression: str, detail: str) -> int | None:
    """The 0-based offset of the first ``at LINE:COLUMN`` (1-based, as the CEL parser reports them) in ``detail``.

    >>> _syntax_error_offset("a &&\\n (b ||", "at 2:7: Syntax error: ...")
    11
    """
    match = _SYNTAX_AT.search(detail)
    if match is None:
        return None
    line, column = int(match.group(1)), int(match.group(2))
    lines = expression.split("\n")
    if not 1 <= line <= len(lines):
        return None
    return min(sum(len(text) + 1 for text in lines[:line - 1]) + column - 1, len(expression))


def _name_offset(expression: str, name: str) -> int | None:
    """Where a top-level name is first used in the expression (outside string literals)."""
    match = re.search(rf"(?<![\w.]){re.escape(name)}\b", blank_strings(expression))
    return match.start() if match else None


def unknown_name_message(name: str, known: Collection[str]) -> str:
    """The message for a name that is not a context root, with the nearest root as a suggestion.

    >>> print(unknown_name_message("drfit", CONTEXT_ROOTS))  # doctest: +ELLIPSIS
    unknown name 'drfit' (did you mean 'drift'?); the context has: baseline, carbon, drift, fairness, ...
    """
    close = difflib.get_close_matches(name, list(known), n=1, cutoff=0.6)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return f"unknown name {name!r}{hint}; the context has: {', '.join(sorted(known))}"


def prepare(context: Mapping[str, Any]) -> cel.Context:
    """Convert one model's context to CEL values once, for evaluating many conditions on it.

    Converting a Python mapping is most of the cost of an evaluation: measured
    here, a condition over a full context takes about 110 µs on a dict and
    1.2 µs on a prepared context. Errors (a missing key, a type error) are
    the same either way.

    >>> prepared = prepare({"drift": {"share_drifted": 0.5}})
    >>> Condition("drift.share_drifted > 0.3").evaluate(prepared)
    True
    """
    prepared = cel.Context()
    for name, value in context.items():
        prepared.add_variable(name, value)
    return prepared


class Condition:
    """A compiled CEL condition over the evaluation context of one model.

    Parameters
    ----------
    expression : str
        CEL source, e.g. ``"'data_drift' in symptoms && performance.accuracy_drop > 0.03"``.
    roots : collection of str
        Top-level names the expression may use (default :data:`CONTEXT_ROOTS`).
    fields : mapping, optional
        The declared fields of the roots (default
        :data:`~mape.plan.fields.CONTEXT_FIELDS`); ``None`` checks no fields.

    Raises
    ------
    ConditionError
        On a syntax error (the message carries the caret-marked position), a
        top-level name that is not among ``roots``, or a field a root does not
        declare (``drift.shar_drifted``).

    Examples
    --------
    >>> condition = Condition("has(drift.share_drifted) && drift.share_drifted > 0.3")
    >>> condition.evaluate({"drift": {"share_drifted": 0.5}})
    True
    >>> condition.evaluate({"drift": {}})
    False
    >>> Condition("drfit.share_drifted > 0.3")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    mape.errors.ConditionError: unknown name 'drfit' (did you mean 'drift'?); the context has: ...
    >>> Condition("drift.shar_drifted > 0.3")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    mape.errors.ConditionError: unknown field 'shar_drifted' of drift (did you mean 'share_drifted'?); ...
    """

    def __init__(self, expression: str, *, roots: Collection[str] = CONTEXT_ROOTS,
                 fields: Mapping[str, RootFields] | None = CONTEXT_FIELDS) -> None:
        self.expression = expression
        self.roots = tuple(roots)
        if len(expression) > MAX_EXPRESSION_LENGTH:
            # 20,000 chained `1 + 1 + ...` overflow the CEL interpreter's stack: a crash, not an exception
            raise ConditionError(f"the expression is too long: {len(expression)} characters; "
                                 f"at most {MAX_EXPRESSION_LENGTH}")
        try:
            self._program = cel.compile(expression)
        except ValueError as exc:
            detail = _PARSE_PREFIX.sub("", str(exc)).replace("ERROR: <input>:", "at ")
            raise ConditionError(f"not a valid CEL expression: {_first_error(detail)}",
                                 offset=_syntax_error_offset(expression, detail)) from None
        references = self._program.references()
        variables = set(references.get("variables", ())) - _bound_variables(expression)
        unknown = sorted(variables - set(self.roots))
        if unknown:
            raise ConditionError(unknown_name_message(unknown[0], self.roots),
                                 offset=_name_offset(expression, unknown[0]))
        if fields is not None:
            try:
                check_paths(expression, {root: spec for root, spec in fields.items() if root in self.roots})
            except ValueError as exc:
                raise ConditionError(str(exc), offset=getattr(exc, "offset", None)) from None
        #: The context roots the expression reads.
        self.variables: frozenset[str] = frozenset(variables)

    def evaluate(self, context: Mapping[str, Any] | cel.Context) -> bool:
        """Evaluate against one model's context: a mapping, or one made by :func:`prepare`.

        Raises
        ------
        ConditionError
            When a signal is missing (``missing=True``: a map key or a root
            is absent), on a type error, or when the result is not a boolean.
            Callers treat every one of these as "does not hold".
        """
        try:
            result = self._program.execute(context if isinstance(context, cel.Context) else dict(context))
        except KeyError as exc:
            raise ConditionError(f"signal not available: no key {exc.args[0]!r}", missing=True) from None
        except RuntimeError as exc:
            text = str(exc)
            if text.startswith("Undefined variable"):
                raise ConditionError(f"signal not available: {text.split('.')[0]}", missing=True) from None
            raise ConditionError(f"evaluation failed: {text}") from None
        except TypeError as exc:
            raise ConditionError(f"type error: {str(exc).split('.')[0]}") from None
        except (KeyboardInterrupt, SystemExit, GeneratorExit):
            raise
        except BaseException as exc:  # noqa: BLE001 - the Rust binding may panic; a condition never stops the loop
            raise ConditionError(f"evaluation failed: {type(exc).__name__}: {exc}") from None
        if not isinstance(result, bool):
            raise ConditionError(f"the condition must be true or false; got {type(result).__name__} {result!r}")
        return result

    def __repr__(self) -> str:
        return f"Condition({self.expression!r})"

    def __str__(self) -> str:
        return self.expression
