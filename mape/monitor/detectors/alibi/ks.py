"""Kolmogorov-Smirnov drift detector computed by alibi-detect's ``KSDrift``.

Who calls it: the drift sensor, for every numeric feature of a model, when
the drift settings say ``backend: alibi`` (and ``numeric_test: ks``).
"""

from __future__ import annotations

from types import ModuleType
from typing import Any, ClassVar

import numpy as np

from mape.monitor.detectors._params import Constraint, Interval, Options
from mape.monitor.detectors.alibi._univariate import AlibiNumericDetector
from mape.monitor.detectors.effect_size import DEFAULT_BINS, Effect


class AlibiKSDetector(AlibiNumericDetector):
    """Two-sample Kolmogorov-Smirnov test of a numeric sample by alibi-detect's ``KSDrift``, with our effect size.

    The same contract and result as
    :class:`~mape.monitor.detectors.KSDetector`: NaNs are dropped and counted,
    the effect size comes from mape's reference binning. The p-value is
    alibi-detect's: :func:`scipy.stats.ks_2samp` with the asymptotic
    distribution at every sample size, kept in float32. It equals
    ``KSDetector(method="asymp")`` to float32 precision, and differs from
    the default ``KSDetector`` (exact up to 10,000 rows) by at most a few
    percent of the p-value on small samples.

    Parameters
    ----------
    alpha : float, default 0.05
        Significance level of :attr:`DetectorResult.drift_detected`; alibi's ``p_val``.
    effect : {"wasserstein", "psi", "js"}, default "wasserstein"
        The effect size of :attr:`DetectorResult.effect_size` (see
        :mod:`mape.monitor.detectors.effect_size`).
    bins : int, default 20
        Number of reference-quantile bins for ``"psi"`` and ``"js"``.

    Attributes
    ----------
    alibi_detector_ : alibi_detect.cd.KSDrift or None
        The fitted detector (``correction='none'``: one feature); ``None``
        for an empty reference.
    reference_, n_reference_, n_missing_reference_, edges_, reference_bin_counts_, spread_
        As :class:`~mape.monitor.detectors._numeric.NumericDetector`.

    References
    ----------
    .. [1] Van Looveren, A., Klaise, J., Vacanti, G., Cobb, O., Scillitoe, A.,
       Samoilescu, R. and Athorne, A. (2019). Alibi Detect: algorithms for
       outlier, adversarial and drift detection. https://github.com/SeldonIO/alibi-detect
    .. [2] Smirnov, N. (1948). Table for estimating the goodness of fit of
       empirical distributions. Annals of Mathematical Statistics, 19(2), 279-281.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(7)
    >>> detector = AlibiKSDetector(alpha=0.01).fit(rng.normal(0.0, 1.0, size=2000))
    >>> detector
    AlibiKSDetector(alpha=0.01)
    >>> detector.score(rng.normal(0.0, 1.0, size=500)).drift_detected
    False
    >>> shifted = detector.score(rng.normal(0.5, 1.0, size=500))
    >>> shifted.drift_detected, f"{shifted.statistic:.3f}", f"{shifted.p_value:.1e}"
    (True, '0.213', '2.5e-16')
    >>> shifted.effect_name, f"{shifted.effect_size:.2f}"  # as KSDetector's
    ('wasserstein', '0.52')
    """

    test_name: ClassVar[str] = "ks"
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
        return cd.KSDrift(reference, p_val=self.alpha, correction="none")
