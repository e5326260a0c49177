"""Streaming multivariate drift detector: alibi-detect's online least-squares density difference (``LSDDDriftOnline``).

Who calls it: a caller watching a stream of rows (a model's inputs) one row
at a time with the alibi-detect backend.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any, ClassVar, Literal

import numpy as np

from mape.monitor.detectors._params import Constraint, Interval, Options
from mape.monitor.detectors.alibi._online import AlibiOnlineDetector
from mape.monitor.online.base import OrNone


class AlibiLSDDOnline(AlibiOnlineDetector):
    """Online LSDD drift detection on a stream of rows, by alibi-detect's ``LSDDDriftOnline`` (PyTorch backend).

    The statistic is the least-squares density difference between the
    reference and a sliding window of the last ``window_size`` rows, with
    Gaussian kernels centred on ``n_kernel_centers`` reference rows;
    alibi-detect standardises the columns by the reference itself. A change
    is detected when the statistic exceeds the threshold configured for the
    time step, so that false alarms come once in ``arl0`` updates on average
    [1]_. See :mod:`mape.monitor.detectors.alibi._online` for the costs and
    the state.

    Parameters
    ----------
    arl0 : float, default 200
        Expected number of in-control updates between false alarms (alibi's ``ert``).
    window_size : int, default 20
        Rows in the sliding test window.
    n_bootstraps : int, default 2000
        Bootstrap simulations behind the thresholds; at least ten times ``arl0``.
    max_samples : int, default 1000
        Most reference rows used (drawn at random, seeded).
    n_kernel_centers : int, optional
        Reference rows used as kernel centres; alibi-detect's default is ``2 * window_size``.
    lambda_rd_max : float, default 0.2
        alibi-detect's bound on the regularisation, relative to the LSDD.
    random_state : int, default 0
        Seed of the subsampling and of torch's generator while alibi-detect configures.
    device : {"cpu", "cuda", "auto"}, default "cpu"
        Where torch computes.

    Attributes
    ----------
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
    >>> detector = AlibiLSDDOnline(arl0=50, window_size=10, n_bootstraps=500).fit(rng.normal(size=(300, 3)))
    >>> stream = np.vstack([rng.normal(size=(20, 3)), rng.normal(2.0, 1.0, size=(40, 3))])
    >>> [i for i, row in enumerate(stream) if detector.update(row).drift_detected][:1]
    [26]
    """

    _parameter_constraints: ClassVar[dict[str, Constraint]] = {
        "arl0": Interval(float, 1, None, closed="neither"),
        "window_size": Interval(int, 2, None, closed="left"),
        "n_bootstraps": Interval(int, 1, None, closed="left"),
        "max_samples": Interval(int, 2, None, closed="left"),
        "n_kernel_centers": OrNone(Interval(int, 1, None, closed="left")),
        "lambda_rd_max": Interval(float, 0, None, closed="neither"),
        "random_state": Interval(int, 0, None, closed="left"),
        "device": Options(("cpu", "cuda", "auto")),
    }

    def __init__(self, *, arl0: float = 200, window_size: int = 20, n_bootstraps: int = 2000,
                 max_samples: int = 1000, n_kernel_centers: int | None = None, lambda_rd_max: float = 0.2,
                 random_state: int = 0, device: Literal["cpu", "cuda", "auto"] = "cpu") -> None:
        self.arl0 = arl0
        self.window_size = window_size
        self.n_bootstraps = n_bootstraps
        self.max_samples = max_samples
        self.n_kernel_centers = n_kernel_centers
        self.lambda_rd_max = lambda_rd_max
        self.random_state = random_state
        self.device = device
        self._reset()

    def _min_reference(self) -> int:
        centres = self.n_kernel_centers if self.n_kernel_centers is not None else 2 * self.window_size
        return centres + 2 * self.window_size + 1

    def _build(self, cd: ModuleType, reference: np.ndarray, device: Any) -> Any:
        return cd.LSDDDriftOnline(reference, ert=self.arl0, window_size=self.window_size, backend="pytorch",
                                  n_bootstraps=self.n_bootstraps, n_kernel_centers=self.n_kernel_centers,
                                  lambda_rd_max=self.lambda_rd_max, device=device, verbose=False)
