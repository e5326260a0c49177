"""Every error mape raises on purpose, under one base class.

Callers catch :class:`MapeError` to tell our own failures from bugs. Errors
about bad input name the file, the field path and the value, so the person
who wrote the input can fix it without reading our code.
"""

from __future__ import annotations

import functools
from typing import Any


class MapeError(Exception):
    """Base class of all errors raised by mape on purpose."""


class InvalidParameterError(MapeError, ValueError):
    """A constructor or function parameter has a value outside its domain.

    The message has one shape everywhere:
    ``The 'alpha' parameter of KSDetector must be a float in (0, 1). Got 1.5 instead.``
    """

    @classmethod
    def for_parameter(cls, name: str, owner: str, expected: str, got: Any) -> "InvalidParameterError":
        return cls(f"The {name!r} parameter of {owner} must be {expected}. Got {got!r} instead.")


class NotFittedError(MapeError, ValueError):
    """A detector or estimator was used before ``fit``."""


class MissingDependencyError(MapeError, ImportError):
    """An optional dependency that the configuration asks for is not installed; the message says what to install."""


class ConfigError(MapeError, ValueError):
    """The configuration file or environment is invalid.

    Parameters
    ----------
    message : str
        What is wrong.
    source : str, optional
        The file (or ``environment``) the value came from.
    field : str, optional
        Dotted path of the offending field, e.g. ``models[0].training.entrypoint``.
    value : Any, optional
        The offending value.
    """

    def __init__(self, message: str, *, source: str | None = None, field: str | None = None, value: Any = None):
        self.source = source
        self.field = field
        self.value = value
        where = ": ".join(p for p in (source, field) if p)
        text = f"{where}: {message}" if where else message
        if value is not None:
            text += f" (got {shown(value)})"
        super().__init__(text)


def shown(value: Any, limit: int = 120) -> str:
    """``repr(value)`` for a message: cut to ``limit`` characters, and safe for ints too long to print.

    >>> shown("x" * 500)[-12:], shown(16 ** 5000)
    ("xxxxxxxx...'", '<an int of 6021 digits>')
    """
    try:
        text = repr(value)
    except ValueError:  # an int past sys.get_int_max_str_digits()
        return f"<an int of {int(value.bit_length() * 0.30103) + 1} digits>"
    return text if len(text) <= limit else f"{text[:limit - 4]}...{text[-1]}"


class PolicyError(ConfigError):
    """A policy file is invalid: it is refused, the other policies keep working.

    Parameters
    ----------
    message : str
        What is wrong.
    source : str, optional
        The policy file.
    field : str, optional
        Dotted path of the offending field, e.g. ``spec.action.params.window``.
    value : Any, optional
        The offending value.
    line, column : int, optional
        Where in ``source`` (1-based), shown compiler-style as
        ``policies/x.yaml:7:9: spec.when: ...`` so editors can jump there.
    """

    def __init__(self, message: str, *, source: str | None = None, field: str | None = None, value: Any = None,
                 line: int | None = None, column: int | None = None):
        self.line = line
        self.column = column
        super().__init__(message, source=_located(source, line, column), field=field, value=value)
        self.source = source
        self.message = message

    @property
    def location(self) -> str:
        """``source:line:column`` as far as known (``""`` without a source)."""
        return _located(self.source, self.line, self.column) or ""


def _located(source: str | None, line: int | None, column: int | None) -> str | None:
    if not source or line is None:
        return source
    return f"{source}:{line}" + (f":{column}" if column is not None else "")


class ConditionError(MapeError, ValueError):
    """A condition cannot be compiled, names an unknown variable, or cannot be evaluated.

    Parameters
    ----------
    message : str
        What went wrong, in one sentence (a syntax error adds the caret-marked
        expression).
    missing : bool
        True when evaluation failed because a signal is not in the context
        (a missing map key or variable), as opposed to a type error or a bug
        in the expression.
    offset : int, optional
        Where in the expression the problem is (0-based character offset),
        when the compiler or the field check knows; the loader turns it into
        a line and column of the policy file.
    """

    def __init__(self, message: str, *, missing: bool = False, offset: int | None = None) -> None:
        super().__init__(message)
        self.missing = missing
        self.offset = offset


class DataSourceError(MapeError):
    """A data source cannot be read, or lacks a configured column."""


class ScheduleError(MapeError, ValueError):
    """A scheduling request cannot be met: an empty window, or a forecast that does not cover it."""


class ActionError(MapeError):
    """Base class of failures raised by effectors."""


class PermanentActionError(ActionError):
    """The action failed and retrying cannot help (bad parameters, missing version)."""


class TransientActionError(ActionError):
    """The action failed but may succeed later; ``delay`` is the suggested wait in seconds."""

    def __init__(self, message: str, *, delay: float = 30.0):
        super().__init__(message)
        self.delay = delay


class ActionTimeoutError(ActionError):
    """The executor interrupted an attempt that ran past its action type's ``timeout``; the run ends ``timed_out``."""


class ServingError(MapeError):
    """A serving target cannot act: no free port, a replica fails to start, the artifact is unreadable, the API
    server refuses.

    Parameters
    ----------
    message : str
        What failed, in one sentence.
    model : str
        The managed model whose replicas were being changed; the message
        starts with it.
    log_tail : str, optional
        The last lines a failed replica wrote, appended to the message.
    transient : bool
        Whether trying again later may succeed (a timeout, an overloaded API
        server); False when only a change of configuration or permissions can
        help (an unknown deployment, a refused token). The ``rescale`` action
        retries transient failures and fails at once on the others.
    """

    def __init__(self, message: str, *, model: str, log_tail: str | None = None, transient: bool = True):
        self.message = message
        self.model = model
        self.log_tail = log_tail
        self.transient = transient
        text = f"serving model {model}: {message}"
        if log_tail:
            text += f"\n--- last lines of its log ---\n{log_tail.rstrip()}"
        super().__init__(text)

    def __reduce__(self) -> tuple[Any, ...]:  # keyword-only arguments: pickle (to and from flow workers) by name
        return (functools.partial(type(self), model=self.model, log_tail=self.log_tail, transient=self.transient),
                (self.message,))


class CanaryNotSupportedError(MapeError):
    """A model's serving cannot run a canary beside production; the promotion is then direct.

    Parameters
    ----------
    reason : str
        Why, in one sentence a person can act on (no serving section, no
        version column in the inference log, no production replicas).
    """

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


class SimulationError(MapeError):
    """``mape policy simulate`` cannot start: no ticks in the range, no models, or an inconsistent request."""


class IllegalTransitionError(MapeError):
    """An action run was asked to move between states that the state machine forbids."""
