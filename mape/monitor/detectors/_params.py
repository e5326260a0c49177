"""Declared parameter constraints of detectors, checked in one place with one message shape.

Who calls it: :class:`mape.monitor.detectors.base.Detector` validates every
detector's parameters against its ``_parameter_constraints`` dict (the
scikit-learn pattern), raising :class:`~mape.errors.InvalidParameterError`
with the message ``The 'alpha' parameter of KSDetector must be a float in
(0, 1). Got 1.5 instead.``
"""

from __future__ import annotations

import copy
import inspect
import math
import numbers
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Literal, Self

from mape.errors import InvalidParameterError


class Constraint(ABC):
    """What values a parameter accepts; ``str()`` describes them for the error message."""

    @abstractmethod
    def is_satisfied_by(self, value: Any) -> bool: ...


@dataclass(frozen=True)
class Interval(Constraint):
    """A real (``float``) or integral (``int``) number between two bounds; ``None`` is unbounded.

    >>> str(Interval(float, 0, 1, closed="neither"))
    'a float in (0, 1)'
    >>> Interval(int, 1, None, closed="left").is_satisfied_by(True)
    False
    """

    type: type
    left: float | None
    right: float | None
    closed: Literal["left", "right", "both", "neither"]

    def is_satisfied_by(self, value: Any) -> bool:
        if isinstance(value, bool):
            return False
        kind = numbers.Integral if self.type is int else numbers.Real
        if not isinstance(value, kind) or math.isnan(float(value)):
            return False
        if self.left is not None:
            if value < self.left or (value == self.left and self.closed in ("right", "neither")):
                return False
        if self.right is not None:
            if value > self.right or (value == self.right and self.closed in ("left", "neither")):
                return False
        return True

    def __str__(self) -> str:
        low = "-inf" if self.left is None else f"{self.left:g}"
        high = "inf" if self.right is None else f"{self.right:g}"
        opening = "[" if self.closed in ("left", "both") and self.left is not None else "("
        closing = "]" if self.closed in ("right", "both") and self.right is not None else ")"
        article = "an" if self.type is int else "a"
        return f"{article} {self.type.__name__} in {opening}{low}, {high}{closing}"


@dataclass(frozen=True)
class Options(Constraint):
    """One of a fixed set of strings.

    >>> str(Options(("auto", "exact")))
    "a str among {'auto', 'exact'}"
    """

    values: tuple[str, ...]

    def is_satisfied_by(self, value: Any) -> bool:
        return isinstance(value, str) and value in self.values

    def __str__(self) -> str:
        return "a str among {" + ", ".join(repr(v) for v in self.values) + "}"


@dataclass(frozen=True)
class Boolean(Constraint):
    """``True`` or ``False`` (numpy booleans too)."""

    def is_satisfied_by(self, value: Any) -> bool:
        return isinstance(value, bool) or type(value).__name__ == "bool_"

    def __str__(self) -> str:
        return "a bool"


def validate_params(owner: str, constraints: Mapping[str, Constraint], params: Mapping[str, Any]) -> None:
    """Raise :class:`InvalidParameterError` for the first parameter outside its constraint.

    >>> validate_params("KSDetector", {"alpha": Interval(float, 0, 1, closed="neither")}, {"alpha": 1.5})
    Traceback (most recent call last):
    ...
    mape.errors.InvalidParameterError: The 'alpha' parameter of KSDetector must be a float in (0, 1). Got 1.5 instead.
    """
    for name, constraint in constraints.items():
        value = params[name]
        if not constraint.is_satisfied_by(value):
            raise InvalidParameterError.for_parameter(name, owner, str(constraint), value)


_PARAM_DEFAULTS: dict[type, dict[str, Any]] = {}


class Parameterized:
    """The parameter handling every detector shares (scikit-learn's and river's shape).

    Subclasses take keyword-only constructor parameters, store them verbatim
    under their own names and declare ``_parameter_constraints``; this gives
    them :meth:`get_params`, :meth:`clone`, :meth:`_validate_params` and a
    ``repr`` that shows the parameters changed from their defaults.
    """

    _parameter_constraints: ClassVar[dict[str, Constraint]] = {}

    @classmethod
    def _param_defaults(cls) -> dict[str, Any]:
        defaults = _PARAM_DEFAULTS.get(cls)
        if defaults is None:  # read once per class: a sensor builds a detector per feature on every fit
            signature = inspect.signature(cls.__init__)
            defaults = {p.name: p.default for p in signature.parameters.values() if p.kind is p.KEYWORD_ONLY}
            _PARAM_DEFAULTS[cls] = defaults
        return dict(defaults)

    def get_params(self) -> dict[str, Any]:
        """The constructor parameters, by name."""
        return {name: getattr(self, name) for name in self._param_defaults()}

    def clone(self) -> Self:
        """A new, unfitted instance with the same parameters."""
        return type(self)(**copy.deepcopy(self.get_params()))

    def _validate_params(self) -> None:
        validate_params(type(self).__name__, self._parameter_constraints, self.get_params())

    def __repr__(self) -> str:
        defaults = self._param_defaults()
        changed = {name: value for name, value in self.get_params().items() if not _same(value, defaults[name])}
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in changed.items())})"


def _same(value: Any, default: Any) -> bool:
    try:
        return bool(value is default or (type(value) is type(default) and value == default))
    except (TypeError, ValueError):
        return False
