"""Two-sample Kolmogorov-Smirnov drift detector for numeric features.

Who calls it: the drift sensor, for every numeric feature of a model.
"""

from __future__ import annotations

from typing import ClassVar, Literal

import numpy as np
import numpy.typing as npt
import pandas as pd
from scipy import stats

from mape.monitor.detectors._params import Constraint, Interval, Options
from mape.monitor.detectors.base import Detector, DetectorResult, numeric_sample

#: Largest sample for which ``method="auto"`` computes the exact p-value (scipy's rule).
EXACT_MAX_N = 10_000


class KSDetector(Detector):
    """Two-sample Kolmogorov-Smirnov test of a numeric sample against a reference.

    The statistic is the largest distance between the two empirical
    distribution functions. The reference is stored sorted, so each score
    sorts only the current sample. NaNs are dropped from both samples and
    counted in the result.

    Parameters
    ----------
    alpha : float, default 0.05
        Significance level of :attr:`DetectorResult.drift_detected`.
    method : {"auto", "exact", "asymp"}, default "auto"
        How the p-value is computed: the exact distribution (via
        :func:`scipy.stats.ks_2samp`), Smirnov's asymptotic one
        (:data:`scipy.stats.kstwo` at the effective sample size
        ``n*m/(n+m)``), or exact up to 10,000 rows per sample and asymptotic
        beyond, as scipy does.

    Attributes
    ----------
    reference_ : numpy.ndarray
        The reference sample without NaNs, sorted.
    n_reference_ : int
        Its size.
    n_missing_reference_ : int
        NaNs dropped from the reference.

    References
    ----------
    .. [1] Smirnov, N. (1948). Table for estimating the goodness of fit of
       empirical distributions. Annals of Mathematical Statistics, 19(2), 279-281.
    .. [2] Hodges, J. L. (1958). The significance probability of the Smirnov
       two-sample test. Arkiv for Matematik, 3(5), 469-486.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(7)
    >>> detector = KSDetector(alpha=0.01).fit(rng.normal(0.0, 1.0, size=2000))
    >>> detector
    KSDetector(alpha=0.01)
    >>> detector.score(rng.normal(0.0, 1.0, size=500)).drift_detected
    False
    >>> shifted = detector.score(rng.normal(0.5, 1.0, size=500))
    >>> shifted.drift_detected, f"{shifted.statistic:.3f}", f"{shifted.p_value:.1e}"
    (True, '0.212', '2.8e-16')
    """

    test_name: ClassVar[str] = "ks"
    kind: ClassVar[Literal["numeric", "categorical"]] = "numeric"
    _parameter_constraints: ClassVar[dict[str, Constraint]] = {
        "alpha": Interval(float, 0, 1, closed="neither"),
        "method": Options(("auto", "exact", "asymp")),
    }

    def __init__(self, *, alpha: float = 0.05, method: Literal["auto", "exact", "asymp"] = "auto") -> None:
        self.alpha = alpha
        self.method = method
        self._reset()

    def _fit(self, reference: npt.ArrayLike | pd.Series) -> None:
        values, missing = numeric_sample(reference)
        self.reference_ = np.sort(values)
        self.n_reference_ = int(values.size)
        self.n_missing_reference_ = missing

    def _score(self, current: npt.ArrayLike | pd.Series) -> DetectorResult:
        values, missing = numeric_sample(current)
        n, m = self.n_reference_, int(values.size)
        if n == 0 or m == 0:
            statistic = p_value = float("nan")
        elif self.method == "exact" or (self.method == "auto" and max(n, m) <= EXACT_MAX_N):
            result = stats.ks_2samp(self.reference_, values, method="exact")
            statistic, p_value = float(result.statistic), float(result.pvalue)
        else:
            statistic = ks_statistic(self.reference_, np.sort(values))
            effective_n = np.round(n * m / (n + m))
            p_value = float(np.clip(stats.kstwo.sf(statistic, effective_n), 0.0, 1.0))
        return DetectorResult(
            test=self.test_name, statistic=statistic, p_value=p_value, n_reference=n, n_current=m,
            drift_detected=bool(p_value < self.alpha), n_missing_reference=self.n_missing_reference_,
            n_missing_current=missing,
        )


def ks_statistic(reference: np.ndarray, current: np.ndarray) -> float:
    """Largest distance between the empirical CDFs of two sorted, non-empty samples.

    >>> ks_statistic(np.array([1.0, 2.0, 3.0, 4.0]), np.array([3.5, 4.5]))
    0.75
    """
    both = np.concatenate([reference, current])
    cdf_reference = np.searchsorted(reference, both, side="right") / reference.size
    cdf_current = np.searchsorted(current, both, side="right") / current.size
    return float(np.max(np.abs(cdf_reference - cdf_current)))
