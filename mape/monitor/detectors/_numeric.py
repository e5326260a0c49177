"""What every numeric detector learns from its reference, and the effect size it reports.

Who calls it: :class:`~mape.monitor.detectors.ks.KSDetector` and
:class:`~mape.monitor.detectors.cvm.CVMDetector` derive from
:class:`NumericDetector`. Fitting sorts the reference once and computes
everything an effect size needs (quantile bin edges and the reference's bin
counts, its standard deviation), so a score sorts only the current sample.
"""

from __future__ import annotations

from typing import ClassVar, Literal

import numpy as np
import numpy.typing as npt
import pandas as pd

from mape.monitor.detectors import effect_size
from mape.monitor.detectors._pooled import Pooled
from mape.monitor.detectors.base import Detector, numeric_sample


class NumericDetector(Detector):
    """Base of detectors of numeric features: a sorted reference, its binning and spread.

    Subclasses have the parameters ``effect`` (which effect size to report)
    and ``bins`` (quantile bins for ``"psi"`` and ``"js"``), and implement
    :meth:`_score`.

    Attributes
    ----------
    reference_ : numpy.ndarray
        The reference sample without NaNs, sorted.
    n_reference_ : int
        Its size.
    n_missing_reference_ : int
        NaNs dropped from the reference.
    edges_ : numpy.ndarray
        Inner edges of the reference-quantile bins (:func:`~mape.monitor.detectors.effect_size.quantile_edges`).
    reference_bin_counts_ : numpy.ndarray
        Reference values per bin.
    spread_ : float
        The reference's standard deviation, the unit of the Wasserstein effect size.
    """

    kind: ClassVar[Literal["numeric", "categorical"]] = "numeric"
    effect: str
    bins: int

    def _fit(self, reference: npt.ArrayLike | pd.Series) -> None:
        values, missing = numeric_sample(reference)
        self.reference_ = np.sort(values)
        self.n_reference_ = int(values.size)
        self.n_missing_reference_ = missing
        self.edges_ = effect_size.quantile_edges(self.reference_, self.bins)
        self.reference_bin_counts_ = effect_size.bin_counts(self.reference_, self.edges_, assume_sorted=True)
        self.spread_ = effect_size.reference_spread(self.reference_)

    def _effect_size(self, current_sorted: np.ndarray, pooled: Pooled | None = None) -> float:
        """The configured effect size of a sorted, non-empty current sample (``pooled`` is reused if given)."""
        if self.effect == "wasserstein":
            pooled = pooled if pooled is not None else Pooled(self.reference_, current_sorted)
            return effect_size.scaled(pooled.wasserstein(), self.spread_)
        counts = effect_size.bin_counts(current_sorted, self.edges_, assume_sorted=True)
        if self.effect == "psi":
            return effect_size.psi(self.reference_bin_counts_, counts)
        return effect_size.jensen_shannon(self.reference_bin_counts_, counts)
