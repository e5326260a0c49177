"""Streaming multivariate drift detector: alibi-detect's online maximum mean discrepancy (``MMDDriftOnline``).

Who calls it: a caller watching a stream of rows (a model's inputs) one row
at a time with the alibi-detect backend.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any, ClassVar, Literal

import numpy as np

from mape.monitor.detectors._params import Boolean, Constraint, Interval, Options
from mape.monitor.detectors.alibi._online import AlibiOnlineDetector
from mape.monitor.detectors.alibi.mmd import reference_scaling


class AlibiMMDOnline(AlibiOnlineDetector):
    """Online MMD drift detection on a stream of rows, by alibi-detect's ``MMDDriftOnline`` (PyTorch backend).

    The statistic is the MMD² between the reference and a sliding window of
    the last ``window_size`` rows (Gaussian kernel, median-heuristic
    bandwidth); a change is detected when it exceeds the threshold that
    alibi-detect configured for the time step, so that false alarms come
    once in ``arl0`` updates on average [1]_. Rows are centred and scaled by
    the reference's column means and standard deviations first (with
    ``standardize``). See :mod:`mape.monitor.detectors.alibi._online` for the
    costs and the state.

    Parameters
    ----------
    arl0 : float, default 200
        Expected number of in-control updates between false alarms (alibi's ``ert``).
    window_size : int, default 20
        Rows in the sliding test window: small windows react fast to large
        changes, large ones see small changes.
    n_bootstraps : int, default 2000
        Bootstrap simulations behind the thresholds; at least ten times
        ``arl0`` for the run length to be accurate.
    max_samples : int, default 1000
        Most reference rows used (drawn at random, seeded): the threshold
        configuration grows with the square of the reference.
    standardize : bool, default True
        Centre and scale each column by the reference's mean and standard deviation.
    random_state : int, default 0
        Seed of the subsampling and of torch's generator while alibi-detect configures.
    device : {"cpu", "cuda", "auto"}, default "cpu"
        Where torch computes.

    Attributes
    ----------
    centre_, scale_ : numpy.ndarray
        The reference's column means and standard deviations.
    alibi_detector_, reference_, test_stat_, threshold_
        See :class:`~mape.monitor.detectors.alibi._online.AlibiOnlineDetector`.
    n_seen_, n_missing_, n_detections_, n_features_in_, feature_names_in_
        See :class:`~mape.monitor.online.multivariate.MultivariateOnlineDetector`.

    References
    ----------
    .. [1] Cobb, O., Van Looveren, A. and Klaise, J. (2022). Sequential
       multivariate change detection with calibrated and memoryless false
       detection rates. AISTATS, PMLR 151, 226-239.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(3)
    >>> detector = AlibiMMDOnline.for_run_length(50, window_size=10, n_bootstraps=500)
    >>> detector
    AlibiMMDOnline(arl0=50, window_size=10, n_bootstraps=500)
    >>> detector = detector.fit(rng.normal(size=(300, 3)))
    >>> stream = np.vstack([rng.normal(size=(20, 3)), rng.normal(2.0, 1.0, size=(40, 3))])
    >>> [i for i, row in enumerate(stream) if detector.update(row).drift_detected][:1]
    [23]
    """

    _parameter_constraints: ClassVar[dict[str, Constraint]] = {
        "arl0": Interval(float, 1, None, closed="neither"),
        "window_size": Interval(int, 2, None, closed="left"),
        "n_bootstraps": Interval(int, 1, None, closed="left"),
        "max_samples": Interval(int, 2, None, closed="left"),
        "standardize": Boolean(),
        "random_state": Interval(int, 0, None, closed="left"),
        "device": Options(("cpu", "cuda", "auto")),
    }

    def __init__(self, *, arl0: float = 200, window_size: int = 20, n_bootstraps: int = 2000,
                 max_samples: int = 1000, standardize: bool = True, random_state: int = 0,
                 device: Literal["cpu", "cuda", "auto"] = "cpu") -> None:
        self.arl0 = arl0
        self.window_size = window_size
        self.n_bootstraps = n_bootstraps
        self.max_samples = max_samples
        self.standardize = standardize
        self.random_state = random_state
        self.device = device
        self._reset()

    def _min_reference(self) -> int:
        return 2 * self.window_size + 1  # a window and its extension, and two rows of reference beside them

    def _learn(self, reference: np.ndarray) -> None:
        self.centre_, self.scale_ = reference_scaling(reference, bool(self.standardize))

    def _prepare(self, values: np.ndarray) -> np.ndarray:
        return ((values - self.centre_) / self.scale_).astype(np.float32)

    def _build(self, cd: ModuleType, reference: np.ndarray, device: Any) -> Any:
        return cd.MMDDriftOnline(reference, ert=self.arl0, window_size=self.window_size, backend="pytorch",
                                 n_bootstraps=self.n_bootstraps, device=device, verbose=False)
