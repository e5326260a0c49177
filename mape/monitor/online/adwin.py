"""ADWIN: an adaptive window that drops its older part when its two parts' means differ (Bifet and Gavaldà 2007).

Who calls it: streaming sensors and the benchmark.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar, Self

from mape.monitor.detectors._params import Constraint, Interval, validate_params
from mape.monitor.online.base import STANDARDISATION_CONSTRAINTS, OnlineDetector


class ADWIN(OnlineDetector):
    """ADWIN2: a window of recent standardised values in an exponential histogram, cut where its mean changed.

    The window is kept in buckets that summarise ``2^i`` consecutive values
    (count, sum, sum of squared deviations), at most ``max_buckets`` per size
    [1]_: memory and time per check are ``O(max_buckets × log(width))``.
    Every ``clock`` values, each boundary between buckets splits the window
    into an older part ``W0`` (``n0`` values, mean ``μ0``) and a newer one
    ``W1`` (``n1``, ``μ1``); the older part is dropped, bucket by bucket,
    while some split has ``|μ0 - μ1| > ε`` with [1]_ (section 4, the
    Bernstein-type bound MOA and river use)::

        ε = sqrt(2 v m ln(2/δ')) + (2/3) m ln(2/δ'),   m = 1/(n0 - c + 1) + 1/(n1 - c + 1),
        δ' = δ / ln(width)

    where ``v`` is the window's variance and ``c = min_window_length``. A
    detection is reported on the value whose check cut the window; the
    window then holds the values after the change, and nothing restarts.
    Values are standardised with ``mean_`` and ``sigma_`` first (ADWIN itself
    only compares means, but the second term of ``ε`` is in the values'
    units, so the same ``delta`` means the same thing on every stream); the
    warm-up values go into the window once standardised.

    False alarms: Theorem 3 of [1]_ bounds the probability that a check cuts
    a window whose mean did not change by ``delta`` (``δ'`` spreads it over
    the ``ln(width)`` sizes of split). With one check every ``clock``
    values, the expected run length between false alarms is then at least
    about ``clock / delta`` values; :meth:`for_run_length` sets
    ``delta = clock / arl0`` from that bound. The bound is loose (a union
    bound over splits, for values in [0, 1] with Hoeffding's inequality; the
    variance form used here is a heuristic for Gaussian-like data), so the
    measured run length is far longer than ``arl0``: no false alarm in
    1,000,000 N(0, 1) values at ``delta = 0.0032`` (``arl0 = 10,000``), where
    about one per 10,000 values takes ``delta ≈ 0.15``. The price is
    detection speed: see ``docs/DESIGN.md``.

    Parameters
    ----------
    delta : float, default 0.002
        Confidence bound δ of a cut (river's and MOA's default).
    clock : int, default 32
        Values between two checks for a cut.
    max_buckets : int, default 5
        Buckets of each size before the two oldest are merged.
    min_window_length : int, default 5
        Fewest values on each side of a split.
    grace_period : int, default 500
        Warm-up values from which ``mean_`` and ``sigma_`` are estimated
        (when not given).
    mean, sigma : float, optional
        The stream's mean and standard deviation, when known.

    Attributes
    ----------
    width_ : int
        Values in the window.
    estimation_ : float
        Mean of the window, in the stream's units.

    References
    ----------
    .. [1] Bifet, A. and Gavaldà, R. (2007). Learning from time-changing data
       with adaptive windowing. Proceedings of the 2007 SIAM International
       Conference on Data Mining, 443-448.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(3)
    >>> stream = np.concatenate([rng.normal(0, 1, 2000), rng.normal(1, 1, 1000)])
    >>> detector = ADWIN.for_run_length(10_000)
    >>> detector
    ADWIN(delta=0.0032)
    >>> for i, x in enumerate(stream):
    ...     if detector.update(x).drift_detected:
    ...         print(f"change detected at {i}, window now {detector.width_} values")
    ...         break
    change detected at 2035, window now 132 values
    """

    _parameter_constraints: ClassVar[dict[str, Constraint]] = {
        "delta": Interval(float, 0, 1, closed="neither"),
        "clock": Interval(int, 1, None, closed="left"),
        "max_buckets": Interval(int, 2, None, closed="left"),
        "min_window_length": Interval(int, 1, None, closed="left"),
        **STANDARDISATION_CONSTRAINTS,
    }
    restarts_after_drift: ClassVar[bool] = False

    def __init__(self, *, delta: float = 0.002, clock: int = 32, max_buckets: int = 5, min_window_length: int = 5,
                 grace_period: int = 500, mean: float | None = None, sigma: float | None = None) -> None:
        self.delta = delta
        self.clock = clock
        self.max_buckets = max_buckets
        self.min_window_length = min_window_length
        self.grace_period = grace_period
        self.mean = mean
        self.sigma = sigma
        self._reset()

    @classmethod
    def for_run_length(cls, arl0: float, **params: Any) -> Self:
        """An ADWIN with ``delta = clock / arl0``: by Theorem 3 of Bifet and Gavaldà, false alarms come at most
        once per ``arl0`` values on average (a loose bound: see the class notes).

        >>> ADWIN.for_run_length(100_000, clock=10)
        ADWIN(delta=0.0001, clock=10)
        """
        clock = params.get("clock", cls._param_defaults()["clock"])
        validate_params(f"{cls.__name__}.for_run_length", {"arl0": Interval(float, clock, None, closed="neither")},
                        {"arl0": arl0})
        return cls(delta=clock / arl0, **params)

    def _begin_warm_up(self) -> None:
        self.width_ = 0
        self.estimation_ = math.nan
        #: Bucket levels: ``_levels[i]`` lists ``[sum, squared deviations]`` of ``2^i`` values, oldest first;
        #: every bucket of level ``i + 1`` is older than every bucket of level ``i``.
        self._levels: list[list[list[float]]] = []
        self._total = 0.0
        self._variance = 0.0  # sum of squared deviations from the window's mean
        self._ticks = 0
        super()._begin_warm_up()

    def _start(self, warm_up: list[float]) -> None:
        for x in warm_up:
            self._insert((x - self.mean_) / self.sigma_)  # type: ignore[operator]
        self._set_estimation()

    def _step(self, x: float) -> bool:
        self._insert((x - self.mean_) / self.sigma_)  # type: ignore[operator]
        self._ticks += 1
        cut = False
        if self._ticks % self.clock == 0 and self.width_ > 2 * self.min_window_length:
            while self._cut_found():
                self._drop_oldest()
                cut = True
        self._set_estimation()
        return cut

    def _set_estimation(self) -> None:
        if self.width_:
            self.estimation_ = self.mean_ + self.sigma_ * self._total / self.width_  # type: ignore[operator]
        else:
            self.estimation_ = math.nan

    def _insert(self, z: float) -> None:
        if self.width_:
            mean = self._total / self.width_
            self._variance += self.width_ * (z - mean) ** 2 / (self.width_ + 1)
        self.width_ += 1
        self._total += z
        if not self._levels:
            self._levels.append([])
        self._levels[0].append([z, 0.0])
        level = 0
        while len(self._levels[level]) > self.max_buckets:
            (sum_a, var_a), (sum_b, var_b) = self._levels[level].pop(0), self._levels[level].pop(0)
            size = 2**level
            merged = [sum_a + sum_b, var_a + var_b + size * (sum_a / size - sum_b / size) ** 2 / 2]
            if level + 1 == len(self._levels):
                self._levels.append([])
            self._levels[level + 1].append(merged)
            level += 1

    def _drop_oldest(self) -> None:
        level = len(self._levels) - 1
        bucket_sum, bucket_variance = self._levels[level].pop(0)
        if not self._levels[level]:
            self._levels.pop()
        size = 2**level
        self.width_ -= size
        self._total -= bucket_sum
        if self.width_:
            rest_mean = self._total / self.width_
            self._variance -= bucket_variance + size * self.width_ * (bucket_sum / size - rest_mean) ** 2 / (
                size + self.width_)
            self._variance = max(self._variance, 0.0)
        else:
            self._variance = 0.0

    def _cut_found(self) -> bool:
        """Whether some split of the window, oldest buckets first, has means further apart than ε."""
        width, total = self.width_, self._total
        if width <= 2 * self.min_window_length:
            return False
        variance = self._variance / width
        log_term = math.log(2.0 * math.log(width) / self.delta)
        offset = self.min_window_length - 1
        n0, sum0 = 0, 0.0
        for level in range(len(self._levels) - 1, -1, -1):
            size = 2**level
            for bucket_sum, _ in self._levels[level]:
                n0 += size
                sum0 += bucket_sum
                n1 = width - n0
                if n1 < self.min_window_length:
                    return False
                if n0 < self.min_window_length:
                    continue
                gap = abs(sum0 / n0 - (total - sum0) / n1)
                m = 1.0 / (n0 - offset) + 1.0 / (n1 - offset)
                if gap > math.sqrt(2.0 * m * variance * log_term) + 2.0 / 3.0 * m * log_term:
                    return True
        return False
