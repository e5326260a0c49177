"""Chi-squared drift detector for categorical features computed by alibi-detect's ``ChiSquareDrift``.

Who calls it: the drift sensor, for every categorical feature of a model, when
the drift settings say ``backend: alibi``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar, Literal

import numpy as np
import numpy.typing as npt
import pandas as pd

from mape.monitor.detectors import effect_size
from mape.monitor.detectors._params import Constraint, Interval, Options
from mape.monitor.detectors.alibi._backend import alibi_cd
from mape.monitor.detectors.base import Detector, DetectorResult, category_counts


class AlibiChiSquareDetector(Detector):
    """Pearson's chi-squared test of category counts by alibi-detect's ``ChiSquareDrift``, with our effect size.

    The same contract and result as
    :class:`~mape.monitor.detectors.ChiSquareDetector`: missing values are
    dropped and counted, a category the reference never saw counts as
    evidence of drift. alibi-detect wants integer categories, so each
    category is coded by its position among the reference's categories (the
    ones only the current sample has get the next codes); the test sees the
    same counts. alibi-detect calls :func:`scipy.stats.chi2_contingency` with
    its default Yates continuity correction, which applies when the two
    samples hold exactly two categories: the p-value equals
    ``ChiSquareDetector(correction=True)`` to float32 precision (and the
    default ``ChiSquareDetector`` with three categories or more).

    Parameters
    ----------
    alpha : float, default 0.05
        Significance level of :attr:`DetectorResult.drift_detected`; alibi's ``p_val``.
    effect : {"js", "psi"}, default "js"
        The effect size of :attr:`DetectorResult.effect_size`: Jensen-Shannon
        distance or PSI between the category proportions (see
        :mod:`mape.monitor.detectors.effect_size`).

    Attributes
    ----------
    alibi_detector_ : alibi_detect.cd.ChiSquareDrift or None
        The fitted detector (``correction='none'``: one feature); ``None``
        for an empty reference.
    reference_counts_ : dict
        Count of each reference category; its order gives the codes.
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

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(3)
    >>> colours = ["red", "green", "blue"]
    >>> detector = AlibiChiSquareDetector().fit(rng.choice(colours, size=1000, p=[0.5, 0.3, 0.2]))
    >>> detector.score(rng.choice(colours, size=400, p=[0.5, 0.3, 0.2])).drift_detected
    False
    >>> shifted = detector.score(rng.choice([*colours, "purple"], size=400, p=[0.3, 0.3, 0.2, 0.2]))
    >>> shifted.drift_detected, f"{shifted.statistic:.1f}", shifted.p_value  # 2.5e-49 underflows float32
    (True, '228.8', 0.0)
    >>> shifted.effect_name, f"{shifted.effect_size:.3f}"
    ('js', '0.342')
    """

    test_name: ClassVar[str] = "chi2"
    kind: ClassVar[Literal["numeric", "categorical"]] = "categorical"
    _parameter_constraints: ClassVar[dict[str, Constraint]] = {
        "alpha": Interval(float, 0, 1, closed="neither"),
        "effect": Options(("js", "psi")),
    }

    def __init__(self, *, alpha: float = 0.05, effect: Literal["js", "psi"] = "js") -> None:
        self.alpha = alpha
        self.effect = effect
        self._reset()

    def _fit(self, reference: npt.ArrayLike | pd.Series) -> None:
        cd = alibi_cd()
        counts, missing = category_counts(reference)
        self.reference_counts_: dict[Any, int] = dict(counts)
        self.n_reference_ = int(sum(counts.values()))
        self.n_missing_reference_ = missing
        self.alibi_detector_ = None
        if self.n_reference_:
            codes = coded_sample(self.reference_counts_, list(self.reference_counts_))
            self.alibi_detector_ = cd.ChiSquareDrift(codes, p_val=self.alpha, correction="none")

    def _score(self, current: npt.ArrayLike | pd.Series) -> DetectorResult:
        counts, missing = category_counts(current)
        n, m = self.n_reference_, int(sum(counts.values()))
        statistic = p_value = effect = float("nan")
        if n and m and self.alibi_detector_ is not None:
            categories = [*self.reference_counts_, *(c for c in counts if c not in self.reference_counts_)]
            data = self.alibi_detector_.predict(coded_sample(counts, categories), drift_type="feature")["data"]
            statistic, p_value = float(data["distance"][0]), float(data["p_val"][0])
            reference_bins, current_bins = effect_size.category_bin_counts(self.reference_counts_, counts)
            measure = effect_size.psi if self.effect == "psi" else effect_size.jensen_shannon
            effect = measure(reference_bins, current_bins)
        return DetectorResult(
            test=self.test_name, statistic=statistic, p_value=p_value, n_reference=n, n_current=m,
            drift_detected=bool(p_value < self.alpha), n_missing_reference=self.n_missing_reference_,
            n_missing_current=missing, effect_size=effect, effect_name=self.effect,
        )


def coded_sample(counts: Mapping[Any, int], categories: list[Any]) -> np.ndarray:
    """A one-column integer sample with ``counts[c]`` rows of code ``categories.index(c)``.

    >>> coded_sample({"b": 2, "a": 1}, ["a", "b", "c"]).ravel().tolist()
    [0, 1, 1]
    """
    sizes = np.array([counts.get(category, 0) for category in categories], dtype=np.int64)
    return np.repeat(np.arange(len(categories), dtype=np.int64), sizes).reshape(-1, 1)
