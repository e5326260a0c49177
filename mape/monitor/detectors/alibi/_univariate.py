"""What the univariate alibi-detect wrappers share: an alibi detector per feature, scored one feature at a time.

Who calls it: :class:`~mape.monitor.detectors.alibi.ks.AlibiKSDetector` and
:class:`~mape.monitor.detectors.alibi.cvm.AlibiCVMDetector` derive from
:class:`AlibiNumericDetector`. It is a
:class:`~mape.monitor.detectors._numeric.NumericDetector` (the sorted
reference, its quantile bins and spread, our effect size) whose test is
computed by alibi-detect: fitting builds the alibi detector on the sorted
reference (one feature, ``correction='none'``: the drift sensor corrects
across features with Benjamini-Hochberg), each score asks it for the
feature-level p-value and statistic (``predict(..., drift_type='feature')``).
alibi-detect keeps both in float32: p-values agree with the built-in
detectors' to about 1e-7 relative, and those below about 1e-45 are 0.
"""

from __future__ import annotations

from abc import abstractmethod
from types import ModuleType
from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt
import pandas as pd

from mape.monitor.detectors._numeric import NumericDetector
from mape.monitor.detectors.alibi._backend import alibi_cd
from mape.monitor.detectors.base import DetectorResult, numeric_sample


class AlibiNumericDetector(NumericDetector):
    """Base of numeric detectors whose test is an alibi-detect univariate detector.

    Subclasses set ``test_name`` and ``min_size`` (the smallest sample the
    test accepts) and implement :meth:`_build`.

    Attributes
    ----------
    alibi_detector_ : alibi_detect.cd detector or None
        The fitted alibi-detect detector; ``None`` when the reference is
        smaller than ``min_size``.
    """

    min_size: ClassVar[int] = 1

    @abstractmethod
    def _build(self, cd: ModuleType, reference: np.ndarray) -> Any:
        """The alibi-detect detector fitted on ``reference`` (one column, float64)."""

    def _fit(self, reference: npt.ArrayLike | pd.Series) -> None:
        cd = alibi_cd()
        super()._fit(reference)
        usable = self.n_reference_ >= self.min_size
        self.alibi_detector_ = self._build(cd, self.reference_.reshape(-1, 1)) if usable else None

    def _score(self, current: npt.ArrayLike | pd.Series) -> DetectorResult:
        values, missing = numeric_sample(current)
        n, m = self.n_reference_, int(values.size)
        statistic = p_value = effect = float("nan")
        if n >= 1 and m >= 1:
            values = np.sort(values)
            if self.alibi_detector_ is not None and m >= self.min_size:
                data = self.alibi_detector_.predict(values.reshape(-1, 1), drift_type="feature")["data"]
                statistic, p_value = float(data["distance"][0]), float(data["p_val"][0])
            effect = self._effect_size(values)
        return DetectorResult(
            test=self.test_name, statistic=statistic, p_value=p_value, n_reference=n, n_current=m,
            drift_detected=bool(p_value < self.alpha), n_missing_reference=self.n_missing_reference_,
            n_missing_current=missing, effect_size=effect, effect_name=self.effect,
        )
