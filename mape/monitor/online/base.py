"""The shape every streaming drift detector shares: ``update(x)`` one value at a time, then read ``drift_detected``.

Who calls it: the detectors of this package subclass :class:`OnlineDetector`;
``tests/monitor/test_online_detectors.py`` checks each one against the
contract written here.

The contract, after river's ``DriftDetector`` and scikit-learn's parameter
handling: ``__init__`` takes keyword-only parameters, stores them verbatim and
calls :meth:`OnlineDetector._reset`, which validates them against the class's
``_parameter_constraints`` (one message shape, raised as
:class:`~mape.errors.InvalidParameterError`) and forgets the stream. State
learned from the stream ends in ``_``. Detectors print their changed
parameters, clone and pickle.

Standardisation: every detector works on ``z = (x - mean_) / sigma_``, so its
thresholds are in units of the in-control standard deviation. ``mean_`` and
``sigma_`` are the ``mean`` and ``sigma`` parameters when given, else they
are estimated from the first ``grace_period`` values of the stream (the
warm-up), during which nothing is detected.
"""

from __future__ import annotations

import math
import statistics
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar, Self

from mape.monitor.detectors._params import Constraint, Interval, Parameterized


@dataclass(frozen=True)
class OrNone(Constraint):
    """``None`` (the parameter is learned from the stream), or a value that satisfies ``constraint``.

    >>> str(OrNone(Interval(float, 0, None, closed="neither")))
    'None or a float in (0, inf)'
    """

    constraint: Constraint

    def is_satisfied_by(self, value: Any) -> bool:
        return value is None or self.constraint.is_satisfied_by(value)

    def __str__(self) -> str:
        return f"None or {self.constraint}"


@dataclass(frozen=True)
class FiniteInterval(Interval):
    """An :class:`Interval` of real numbers without the infinities; unbounded sides are left out of its description.

    >>> str(FiniteInterval(float, 0, None, closed="neither")), str(FiniteInterval(float, None, None, closed="neither"))
    ('a finite float in (0, inf)', 'a finite float')
    >>> FiniteInterval(float, 0, None, closed="neither").is_satisfied_by(float("inf"))
    False
    """

    def is_satisfied_by(self, value: Any) -> bool:
        return super().is_satisfied_by(value) and math.isfinite(float(value))

    def __str__(self) -> str:
        if self.left is None and self.right is None:
            return f"a finite {self.type.__name__}"
        return super().__str__().replace("a ", "a finite ", 1)


#: Constraints of the standardisation parameters that every detector takes.
STANDARDISATION_CONSTRAINTS: dict[str, Constraint] = {
    "grace_period": Interval(int, 2, None, closed="left"),
    "mean": OrNone(FiniteInterval(float, None, None, closed="neither")),
    "sigma": OrNone(FiniteInterval(float, 0, None, closed="neither")),
}


class OnlineDetector(Parameterized, ABC):
    """Base class of streaming drift detectors.

    Subclasses declare ``_parameter_constraints`` (including
    :data:`STANDARDISATION_CONSTRAINTS`), a keyword-only ``__init__`` that
    assigns its parameters (``grace_period``, ``mean`` and ``sigma`` among
    them) and calls ``self._reset()``, and implement :meth:`_start` and
    :meth:`_step`.

    Missing values (NaN) and infinite ones are skipped and counted in
    ``n_missing_``. ``drift_detected`` is true for the one update that found
    a change. When ``restarts_after_drift`` (CUSUM, Page-Hinkley), the next
    update starts afresh: statistics at zero and, where ``mean`` or ``sigma``
    were estimated, a new warm-up on the values after the change.

    Attributes
    ----------
    n_seen_ : int
        Values seen since construction or :meth:`reset` (missing ones excluded).
    n_missing_ : int
        Missing or infinite values skipped.
    n_detections_ : int
        Changes detected.
    mean_, sigma_ : float or None
        The in-control mean and standard deviation; ``None`` during the warm-up.
    """

    _parameter_constraints: ClassVar[dict[str, Constraint]] = {}
    #: Whether the update after a detection starts afresh (warm-up included, where one is needed).
    restarts_after_drift: ClassVar[bool] = True

    grace_period: int
    mean: float | None
    sigma: float | None

    def _reset(self) -> None:
        """Validate the parameters and forget the stream."""
        self._validate_params()
        self.n_seen_ = 0
        self.n_missing_ = 0
        self.n_detections_ = 0
        self._drift = False
        self._begin_warm_up()

    def reset(self) -> Self:
        """Forget the stream (parameters stay); returns ``self``."""
        self._reset()
        return self

    def _begin_warm_up(self) -> None:
        self.mean_: float | None = None
        self.sigma_: float | None = None
        self._warm_up: list[float] = []
        if self.mean is not None and self.sigma is not None:
            self._learn()

    def _learn(self) -> None:
        """Set ``mean_`` and ``sigma_`` from the parameters or the warm-up values, then start detecting."""
        values = self._warm_up
        self.mean_ = float(self.mean) if self.mean is not None else statistics.fmean(values)
        if self.sigma is not None:
            self.sigma_ = float(self.sigma)
        else:
            estimate = statistics.stdev(values)
            self.sigma_ = estimate if estimate > 0 else 1.0  # a constant warm-up: the data's own unit
        self._warm_up = []
        self._start(values)

    @property
    def drift_detected(self) -> bool:
        """Whether the last update detected a change."""
        return self._drift

    @property
    def warming_up(self) -> bool:
        """Whether the detector is still estimating ``mean_`` and ``sigma_`` (it detects nothing meanwhile)."""
        return self.sigma_ is None

    def update(self, x: float) -> Self:
        """Feed one value; returns ``self``. Read :attr:`drift_detected` afterwards."""
        if self._drift:
            self._drift = False
            if self.restarts_after_drift:
                self._begin_warm_up()
        x = float(x)
        if not math.isfinite(x):
            self.n_missing_ += 1
            return self
        self.n_seen_ += 1
        if self.sigma_ is None:
            self._warm_up.append(x)
            if len(self._warm_up) >= self.grace_period:
                self._learn()
            return self
        if self._step(x):
            self._drift = True
            self.n_detections_ += 1
        return self

    @abstractmethod
    def _start(self, warm_up: list[float]) -> None:
        """Start detecting: ``mean_`` and ``sigma_`` are known, ``warm_up`` holds the values they came from."""

    @abstractmethod
    def _step(self, x: float) -> bool:
        """Take one value after the warm-up; return whether it completes a detection."""


