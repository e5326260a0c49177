"""Cramér-von Mises drift detector computed by alibi-detect's ``CVMDrift``.

Who calls it: the drift sensor, for every numeric feature of a model, when
the drift settings say ``backend: alibi`` and ``numeric_test: cvm``.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any, ClassVar

import numpy as np

from mape.monitor.detectors._params import Constraint, Interval, Options
from mape.monitor.detectors.alibi._univariate import AlibiNumericDetector
from mape.monitor.detectors.effect_size import DEFAULT_BINS, Effect


class AlibiCVMDetector(AlibiNumericDetector):
    """Two-sample Cramér-von Mises test of a numeric sample by alibi-detect's ``CVMDrift``, with our effect size.

    The same contract and result as
    :class:`~mape.monitor.detectors.CVMDetector`. The p-value is
    alibi-detect's (:func:`scipy.stats.cramervonmises_2samp`,
    ``method='auto'``, in float32): equal to ``CVMDetector`` to float32
    precision up to 10,000 rows a side, where the built-in one also calls
    scipy. Beyond, ``CVMDetector`` uses its own asymptotic p-value and
    alibi-detect scipy's, which is slower. The test needs at least two values
    on each side; with fewer the p-value is NaN.

    Parameters
    ----------
    alpha : float, default 0.05
        Significance level of :attr:`DetectorResult.drift_detected`; alibi's ``p_val``.
    effect : {"wasserstein", "psi", "js"}, default "wasserstein"
        The effect size of :attr:`DetectorResult.effect_size`.
    bins : int, default 20
        Number of reference-quantile bins for ``"psi"`` and ``"js"``.

    Attributes
    ----------
    alibi_detector_ : alibi_detect.cd.CVMDrift or None
        The fitted detector (``correction='none'``); ``None`` for a reference
        of fewer than two values.
    reference_, n_reference_, n_missing_reference_, edges_, reference_bin_counts_, spread_
        As :class:`~mape.monitor.detectors._numeric.NumericDetector`.

    References
    ----------
    .. [1] Anderson, T. W. (1962). On the distribution of the two-sample
       Cramér-von Mises criterion. Annals of Mathematical Statistics, 33(3),
       1148-1159.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(11)
    >>> detector = AlibiCVMDetector(alpha=0.01).fit(rng.normal(0.0, 1.0, size=2000))
    >>> detector.score(rng.normal(0.0, 1.0, size=500)).drift_detected
    False
    >>> scaled = detector.score(rng.normal(0.0, 1.5, size=500))
    >>> scaled.drift_detected, f"{scaled.statistic:.3f}", f"{scaled.p_value:.1e}"
    (True, '2.064', '9.1e-06')
    """

    test_name: ClassVar[str] = "cvm"
    min_size: ClassVar[int] = 2
    _parameter_constraints: ClassVar[dict[str, Constraint]] = {
        "alpha": Interval(float, 0, 1, closed="neither"),
        "effect": Options(("wasserstein", "psi", "js")),
        "bins": Interval(int, 2, None, closed="left"),
    }

    def __init__(self, *, alpha: float = 0.05, effect: Effect = "wasserstein", bins: int = DEFAULT_BINS) -> None:
        self.alpha = alpha
        self.effect = effect
        self.bins = bins
        self._reset()

    def _build(self, cd: ModuleType, reference: np.ndarray) -> Any:
        return cd.CVMDrift(reference, p_val=self.alpha, correction="none")
