"""Chi-squared drift detector for categorical features.

Who calls it: the drift sensor, for every categorical feature of a model.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import numpy as np
import numpy.typing as npt
import pandas as pd
from scipy import stats

from mape.monitor.detectors import effect_size
from mape.monitor.detectors._params import Boolean, Constraint, Interval, Options
from mape.monitor.detectors.base import Detector, DetectorResult, category_counts


class ChiSquareDetector(Detector):
    """Pearson's chi-squared test of homogeneity between reference and current category counts.

    The contingency table has two rows (reference, current) and one column per
    category seen in either sample, so a category the reference never saw
    counts as evidence of drift. Missing values are dropped and counted. With
    a single category in both samples there is nothing to compare: the
    statistic is 0 and the p-value 1.

    Parameters
    ----------
    alpha : float, default 0.05
        Significance level of :attr:`DetectorResult.drift_detected`.
    correction : bool, default False
        Apply Yates' continuity correction when there are exactly two
        categories (see :func:`scipy.stats.chi2_contingency`).
    effect : {"js", "psi"}, default "js"
        The effect size of :attr:`DetectorResult.effect_size`: the
        Jensen-Shannon distance or PSI between the category proportions, one
        bin per reference category and one for all categories the reference
        never saw (see :mod:`mape.monitor.detectors.effect_size`).

    Attributes
    ----------
    reference_counts_ : dict
        Count of each reference category.
    n_reference_ : int
        Reference size without missing values.
    n_missing_reference_ : int
        Missing values dropped from the reference.

    References
    ----------
    .. [1] Pearson, K. (1900). On the criterion that a given system of
       deviations from the probable in the case of a correlated system of
       variables is such that it can be reasonably supposed to have arisen from
       random sampling. Philosophical Magazine, 50(302), 157-175.
    .. [2] Agresti, A. (2002). Categorical Data Analysis, 2nd ed., section 3.2.
       Wiley.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(3)
    >>> colours = ["red", "green", "blue"]
    >>> detector = ChiSquareDetector().fit(rng.choice(colours, size=1000, p=[0.5, 0.3, 0.2]))
    >>> detector.score(rng.choice(colours, size=400, p=[0.5, 0.3, 0.2])).drift_detected
    False
    >>> shifted = detector.score(rng.choice([*colours, "purple"], size=400, p=[0.3, 0.3, 0.2, 0.2]))
    >>> shifted.drift_detected, f"{shifted.statistic:.1f}", f"{shifted.p_value:.1e}"
    (True, '228.8', '2.5e-49')
    >>> shifted.effect_name, f"{shifted.effect_size:.3f}"
    ('js', '0.342')
    """

    test_name: ClassVar[str] = "chi2"
    kind: ClassVar[Literal["numeric", "categorical"]] = "categorical"
    _parameter_constraints: ClassVar[dict[str, Constraint]] = {
        "alpha": Interval(float, 0, 1, closed="neither"),
        "correction": Boolean(),
        "effect": Options(("js", "psi")),
    }

    def __init__(self, *, alpha: float = 0.05, correction: bool = False,
                 effect: Literal["js", "psi"] = "js") -> None:
        self.alpha = alpha
        self.correction = correction
        self.effect = effect
        self._reset()

    def _fit(self, reference: npt.ArrayLike | pd.Series) -> None:
        counts, missing = category_counts(reference)
        self.reference_counts_: dict[Any, int] = dict(counts)
        self.n_reference_ = int(sum(counts.values()))
        self.n_missing_reference_ = missing

    def _score(self, current: npt.ArrayLike | pd.Series) -> DetectorResult:
        counts, missing = category_counts(current)
        n, m = self.n_reference_, int(sum(counts.values()))
        if n == 0 or m == 0:
            statistic = p_value = effect = float("nan")
        else:
            categories = [*self.reference_counts_, *(c for c in counts if c not in self.reference_counts_)]
            table = np.array([[self.reference_counts_.get(c, 0) for c in categories],
                              [counts.get(c, 0) for c in categories]])
            result = stats.chi2_contingency(table, correction=bool(self.correction))
            statistic, p_value = float(result.statistic), float(result.pvalue)
            reference_bins, current_bins = effect_size.category_bin_counts(self.reference_counts_, counts)
            measure = effect_size.psi if self.effect == "psi" else effect_size.jensen_shannon
            effect = measure(reference_bins, current_bins)
        return DetectorResult(
            test=self.test_name, statistic=statistic, p_value=p_value, n_reference=n, n_current=m,
            drift_detected=bool(p_value < self.alpha), n_missing_reference=self.n_missing_reference_,
            n_missing_current=missing, effect_size=effect, effect_name=self.effect,
        )
