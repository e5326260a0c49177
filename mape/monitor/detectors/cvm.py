"""Two-sample Cramér-von Mises drift detector for numeric features.

Who calls it: the drift sensor, for every numeric feature of a model when the
drift settings choose ``numeric_test: cvm``.
"""

from __future__ import annotations

import math
from typing import ClassVar, Literal

import numpy as np
import numpy.typing as npt
import pandas as pd
from scipy import special, stats

from mape.monitor.detectors._numeric import NumericDetector
from mape.monitor.detectors._params import Constraint, Interval, Options
from mape.monitor.detectors._pooled import Pooled
from mape.monitor.detectors.base import DetectorResult, numeric_sample
from mape.monitor.detectors.effect_size import DEFAULT_BINS, Effect

#: Beyond this many values in either sample the statistic is computed from one merge of the sorted samples.
SCIPY_MAX_N = 10_000


class CVMDetector(NumericDetector):
    """Two-sample Cramér-von Mises test of a numeric sample against a reference.

    The statistic is the squared distance between the two empirical
    distribution functions, summed over the pooled sample:
    ``T = nm/(n+m) * integral (F_n - G_m)^2 dH_{n+m}``, computed from the
    ranks as ``T = U / (nm(n+m)) - (4nm - 1) / (6(n+m))`` with mid-ranks for
    ties (Anderson 1962). Unlike Kolmogorov-Smirnov, which looks only at the
    largest gap, it adds up the gaps everywhere, so it is more sensitive to a
    shift spread over the whole distribution (a change of scale, a shift of
    the tails).

    Up to 10,000 values per sample :func:`scipy.stats.cramervonmises_2samp`
    computes it; beyond that the reference (stored sorted) and the sorted
    current sample are merged once and the statistic read off the merge (the
    squared gaps between the distribution functions, or the mid-ranks when
    there are ties; the Wasserstein effect size reuses the same gaps), and the
    p-value comes from the same asymptotic distribution scipy uses: the
    statistic is normalised with its exact mean and variance under the null
    (Anderson 1962, eq. 11, 14 and 15) and compared with the limiting
    distribution of the one-sample statistic (the series of Csörgő and
    Faraway 1996, eq. 1.2-1.3). NaNs are dropped from both samples and
    counted; fewer than two values in either sample give no verdict.

    Parameters
    ----------
    alpha : float, default 0.05
        Significance level of :attr:`DetectorResult.drift_detected`.
    method : {"auto", "asymptotic"}, default "auto"
        How the p-value is computed: ``"auto"`` enumerates the exact null
        distribution when neither sample has more than 20 values (scipy's
        rule) and uses the asymptotic one otherwise; ``"asymptotic"`` always
        uses the asymptotic one.
    effect : {"wasserstein", "psi", "js"}, default "wasserstein"
        The effect size of :attr:`DetectorResult.effect_size` (see
        :mod:`mape.monitor.detectors.effect_size`).
    bins : int, default 20
        Number of reference-quantile bins for ``"psi"`` and ``"js"``.

    Attributes
    ----------
    reference_ : numpy.ndarray
        The reference sample without NaNs, sorted.
    n_reference_ : int
        Its size.
    n_missing_reference_ : int
        NaNs dropped from the reference.
    edges_, reference_bin_counts_, spread_
        The reference's binning and standard deviation, for the effect size.

    References
    ----------
    .. [1] Anderson, T. W. (1962). On the distribution of the two-sample
       Cramér-von Mises criterion. Annals of Mathematical Statistics, 33(3),
       1148-1159.
    .. [2] Csörgő, S., & Faraway, J. J. (1996). The exact and asymptotic
       distributions of Cramér-von Mises statistics. Journal of the Royal
       Statistical Society, Series B, 58(1), 221-234.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(11)
    >>> detector = CVMDetector(alpha=0.01).fit(rng.normal(0.0, 1.0, size=2000))
    >>> detector
    CVMDetector(alpha=0.01)
    >>> detector.score(rng.normal(0.0, 1.0, size=500)).drift_detected
    False
    >>> scaled = detector.score(rng.normal(0.0, 1.5, size=500))
    >>> scaled.drift_detected, f"{scaled.statistic:.3f}", f"{scaled.p_value:.1e}"
    (True, '2.064', '9.1e-06')
    >>> scaled.effect_name, f"{scaled.effect_size:.2f}"
    ('wasserstein', '0.43')
    """

    test_name: ClassVar[str] = "cvm"
    _parameter_constraints: ClassVar[dict[str, Constraint]] = {
        "alpha": Interval(float, 0, 1, closed="neither"),
        "method": Options(("auto", "asymptotic")),
        "effect": Options(("wasserstein", "psi", "js")),
        "bins": Interval(int, 2, None, closed="left"),
    }

    def __init__(self, *, alpha: float = 0.05, method: Literal["auto", "asymptotic"] = "auto",
                 effect: Effect = "wasserstein", bins: int = DEFAULT_BINS) -> None:
        self.alpha = alpha
        self.method = method
        self.effect = effect
        self.bins = bins
        self._reset()

    def _score(self, current: npt.ArrayLike | pd.Series) -> DetectorResult:
        values, missing = numeric_sample(current)
        n, m = self.n_reference_, int(values.size)
        statistic = p_value = effect = math.nan
        if n >= 1 and m >= 1:
            values = np.sort(values)
            pooled = None
            if n >= 2 and m >= 2:
                if max(n, m) <= SCIPY_MAX_N:
                    result = stats.cramervonmises_2samp(self.reference_, values, method=self.method)
                    statistic, p_value = float(result.statistic), float(result.pvalue)
                else:
                    pooled = Pooled(self.reference_, values)
                    statistic = pooled.cvm()
                    p_value = cvm_asymptotic_pvalue(statistic, n, m)
            effect = self._effect_size(values, pooled)
        return DetectorResult(
            test=self.test_name, statistic=statistic, p_value=p_value, n_reference=n, n_current=m,
            drift_detected=bool(p_value < self.alpha), n_missing_reference=self.n_missing_reference_,
            n_missing_current=missing, effect_size=effect, effect_name=self.effect,
        )


def cvm_asymptotic_pvalue(statistic: float, n: int, m: int) -> float:
    """P-value of a two-sample statistic ``T`` from its normalised limiting distribution.

    ``T`` is centred and scaled with its exact null mean ``(1 + 1/N) / 6`` and
    variance (Anderson 1962, eq. 11 and 14, ``N = n + m``), mapped onto the
    one-sample statistic's scale (eq. 15) and compared with the limiting
    distribution (:func:`cvm_limit_cdf`); below 0.003 that distribution's CDF
    is under 1e-18 and the p-value is 1, as in scipy.

    >>> round(cvm_asymptotic_pvalue(0.461, 20_000, 20_000), 3)
    0.05
    """
    k, size = float(n) * float(m), float(n) + float(m)
    mean = (1.0 + 1.0 / size) / 6.0
    variance = (size + 1.0) * (4.0 * k * size - 3.0 * (float(n) ** 2 + float(m) ** 2) - 2.0 * k) / (
        45.0 * size**2 * 4.0 * k)
    normalised = 1.0 / 6.0 + (statistic - mean) / math.sqrt(45.0 * variance)
    if normalised < 0.003:
        return 1.0
    return max(1.0 - cvm_limit_cdf(normalised), 0.0)


def cvm_limit_cdf(x: float) -> float:
    """CDF of the limiting distribution of the one-sample Cramér-von Mises statistic at ``x > 0``.

    The series of Csörgő and Faraway (1996, eq. 1.2-1.3)::

        V(x) = 1 / (pi^(3/2) sqrt(x)) * sum_k Gamma(k + 1/2) / Gamma(k + 1)
               * sqrt(4k + 1) * exp(-y_k) * K_{1/4}(y_k),   y_k = (4k + 1)^2 / (16 x)

    with ``K`` the modified Bessel function of the second kind. Terms decay
    like ``exp(-2 y_k)``; the sum stops at the first ``k`` with ``y_k > 40``.

    >>> round(cvm_limit_cdf(0.461), 3), round(cvm_limit_cdf(1.168), 4)
    (0.95, 0.999)
    """
    count = int(math.sqrt(16.0 * 40.0 * x) / 4.0) + 4  # y_k > 40 beyond: exp(-80) is negligible
    k = np.arange(count, dtype=float)
    y = (4.0 * k + 1.0) ** 2 / (16.0 * x)
    weights = np.exp(special.gammaln(k + 0.5) - special.gammaln(k + 1.0))
    terms = weights * np.sqrt(4.0 * k + 1.0) * np.exp(-y) * special.kv(0.25, y)
    return float(np.sum(terms) / (math.pi**1.5 * math.sqrt(x)))
