"""Page-Hinkley test: cumulative deviations from the running mean, with a threshold picked from a run length.

Who calls it: streaming sensors and the benchmark.
"""

from __future__ import annotations

from typing import Any, ClassVar, Self

from mape.monitor.detectors._params import Constraint, Interval, Options, validate_params
from mape.monitor.online.base import STANDARDISATION_CONSTRAINTS, OnlineDetector
from mape.monitor.online.cusum import RUN_LENGTH_CONSTRAINTS, Direction, siegmund_threshold


class PageHinkley(OnlineDetector):
    """Page-Hinkley test of a change in the mean, against the running mean of the stream (as in river).

    With ``x̄_t`` the mean of all values since the start (or the last
    restart) including ``x_t``, and ``d_t = (x_t - x̄_t) / sigma_``, the test
    keeps ``U = max(0, U + d_t - delta)`` for increases and
    ``L = max(0, L - d_t - delta)`` for decreases, and detects a change when a
    watched one exceeds ``threshold``. ``U`` is ``m_t - min m`` with Hinkley's
    cumulative sum ``m_t = Σ (d_i - delta)`` [1]_ [2]_, written as a
    recursion.

    Against :class:`~mape.monitor.online.cusum.CUSUM`: the reference is the
    running mean rather than the mean of the warm-up, so the in-control
    level need not be known and its estimate keeps improving (a stream
    whose warm-up was unlucky is not flagged for it), but a change pulls the
    running mean towards the new level, which slows late detections, and a
    change that falls inside a warm-up (after a false alarm just before it)
    is learned as the in-control level: in the benchmark, 2 of 50 streams
    missed a 1-sigma shift that way, which CUSUM, whose warm-up mean is
    frozen, still found. With ``mean`` given, it is a CUSUM with
    ``k=delta`` and ``h=threshold``.

    Calibration: after the warm-up, ``x̄_t`` varies slowly and ``d_t`` is
    close to a standard normal, so the test behaves like a CUSUM with
    ``k = delta`` and ``h = threshold``; :meth:`for_run_length` uses that
    equivalence and Siegmund's approximation
    (:func:`~mape.monitor.online.cusum.siegmund_threshold`). It is an
    approximation: the measured rate of false alarms is in ``docs/DESIGN.md``.

    Parameters
    ----------
    delta : float, default 0.5
        Magnitude of changes tolerated, in standard deviations (half the
        shift to detect fastest).
    threshold : float, default 8.0
        Decision threshold λ in standard deviations; the defaults give an
        in-control run length of about 9,600 samples by the CUSUM equivalence.
    direction : {"both", "up", "down"}, default "both"
        Which shifts to detect: increases, decreases or both.
    grace_period : int, default 500
        Warm-up values from which ``sigma_`` (and the starting mean) are
        estimated (when not given).
    mean : float, optional
        A known in-control mean: used instead of the running mean.
    sigma : float, optional
        The in-control standard deviation, when known.

    Attributes
    ----------
    upper_, lower_ : float
        The statistics ``U`` and ``L``.
    running_mean_ : float
        ``x̄_t`` (the fixed ``mean`` when one is given).

    References
    ----------
    .. [1] Page, E. S. (1954). Continuous inspection schemes. Biometrika,
       41(1/2), 100-115.
    .. [2] Hinkley, D. V. (1971). Inference about the change-point from
       cumulative sum tests. Biometrika, 58(3), 509-523.
    .. [3] Gama, J., Sebastião, R. and Rodrigues, P. P. (2013). On evaluating
       stream learning algorithms. Machine Learning, 90(3), 317-346.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(3)
    >>> stream = np.concatenate([rng.normal(0, 1, 2000), rng.normal(1, 1, 1000)])
    >>> detector = PageHinkley.for_run_length(10_000, shift=1.0)
    >>> detector  # doctest: +ELLIPSIS
    PageHinkley(threshold=8.045...)
    >>> for i, x in enumerate(stream):
    ...     if detector.update(x).drift_detected:
    ...         print(f"change detected at {i}")
    change detected at 2014
    """

    _parameter_constraints: ClassVar[dict[str, Constraint]] = {
        "delta": Interval(float, 0, None, closed="left"),
        "threshold": Interval(float, 0, None, closed="neither"),
        "direction": Options(("both", "up", "down")),
        **STANDARDISATION_CONSTRAINTS,
    }

    def __init__(self, *, delta: float = 0.5, threshold: float = 8.0, direction: Direction = "both",
                 grace_period: int = 500, mean: float | None = None, sigma: float | None = None) -> None:
        self.delta = delta
        self.threshold = threshold
        self.direction = direction
        self.grace_period = grace_period
        self.mean = mean
        self.sigma = sigma
        self._reset()

    @classmethod
    def for_run_length(cls, arl0: float, *, shift: float = 1.0, direction: Direction = "both",
                       **params: Any) -> Self:
        """A test tuned to ``shift`` (``delta = shift / 2``) whose threshold gives ``arl0`` by the CUSUM equivalence.

        ``arl0`` is the expected number of in-control samples between false
        alarms after the warm-up; ``params`` are the other constructor
        parameters.

        >>> PageHinkley.for_run_length(1000, shift=2.0, direction="up")  # doctest: +ELLIPSIS
        PageHinkley(delta=1.0, threshold=2.636..., direction='up')
        """
        validate_params(f"{cls.__name__}.for_run_length", RUN_LENGTH_CONSTRAINTS, {"arl0": arl0, "shift": shift})
        delta = shift / 2.0
        threshold = siegmund_threshold(arl0, delta, direction, owner=f"{cls.__name__}.for_run_length")
        return cls(delta=delta, threshold=threshold, direction=direction, **params)

    def _begin_warm_up(self) -> None:
        self.upper_ = 0.0
        self.lower_ = 0.0
        self.running_mean_: float | None = None
        self._count = 0
        super()._begin_warm_up()

    def _start(self, warm_up: list[float]) -> None:
        self.upper_ = 0.0
        self.lower_ = 0.0
        self.running_mean_ = self.mean_
        self._count = len(warm_up)

    def _step(self, x: float) -> bool:
        if self.mean is None:
            self._count += 1
            self.running_mean_ += (x - self.running_mean_) / self._count  # type: ignore[operator]
        d = (x - self.running_mean_) / self.sigma_  # type: ignore[operator]
        self.upper_ = max(0.0, self.upper_ + d - self.delta)
        self.lower_ = max(0.0, self.lower_ - d - self.delta)
        if self.direction == "up":
            return self.upper_ > self.threshold
        if self.direction == "down":
            return self.lower_ > self.threshold
        return self.upper_ > self.threshold or self.lower_ > self.threshold
