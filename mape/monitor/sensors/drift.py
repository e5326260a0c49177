"""Data drift across all features of a model, corrected for testing many features at once.

Who calls it: the Monitor stage fits one :class:`DriftSensor` per production
version of a model on that version's training window of the inference log, and
scores the current window every tick. The report's summary becomes the
``drift.*`` observations that the Analyze stage and the policies read.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar, Self

import numpy as np
import pandas as pd

from mape.config import DriftConfig, FeaturesConfig
from mape.errors import DataSourceError, NotFittedError
from mape.monitor.detectors import ChiSquareDetector, Detector, KSDetector
from mape.monitor.detectors._params import Constraint, Interval, validate_params
from mape.monitor.multiple_testing import benjamini_hochberg


@dataclass(frozen=True)
class FeatureDrift:
    """The test of one feature: raw p-value, Benjamini-Hochberg q-value and verdict (``q <= alpha``)."""

    feature: str
    test: str
    statistic: float
    p_value: float
    q_value: float
    drifted: bool
    n_reference: int
    n_current: int


@dataclass(frozen=True)
class DriftReport:
    """Drift of one current window against the reference, per feature and in summary.

    When either window is smaller than ``min_samples`` (or no feature could be
    tested), ``reason`` says why and there is no verdict: ``features`` is empty
    and every summary field but the window sizes is ``None``.

    Attributes
    ----------
    n_reference, n_current : int
        Rows in the reference and current windows.
    features : tuple of FeatureDrift
        One entry per tested feature, in configuration order.
    share_drifted : float or None
        ``n_drifted / n_features``.
    n_drifted, n_features : int or None
        Features flagged, features tested (a feature that is entirely missing
        in either window is not tested).
    min_q_value : float or None
        The smallest q-value: how strong the strongest evidence is.
    detected : bool or None
        At least one feature drifted.
    reason : str or None
        Why there is no verdict.
    """

    n_reference: int
    n_current: int
    features: tuple[FeatureDrift, ...] = ()
    share_drifted: float | None = None
    n_drifted: int | None = None
    n_features: int | None = None
    min_q_value: float | None = None
    detected: bool | None = None
    reason: str | None = None

    @property
    def insufficient_data(self) -> bool:
        return self.detected is None

    def __str__(self) -> str:
        if self.detected is None:
            return f"no drift verdict ({self.reason})"
        return (f"{self.n_drifted}/{self.n_features} features drifted (share {self.share_drifted:.2f}, "
                f"min q {self.min_q_value:.3g})")


class DriftSensor:
    """Tests every configured feature of a current window against a reference window.

    Numeric features get a :class:`~mape.monitor.detectors.KSDetector`,
    categorical ones a :class:`~mape.monitor.detectors.ChiSquareDetector`;
    the p-values are adjusted with Benjamini-Hochberg and a feature drifted
    when its q-value is at most ``alpha``, so ``alpha`` bounds the expected
    share of falsely flagged features.

    Parameters
    ----------
    features : FeaturesConfig
        The numeric and categorical feature columns.
    alpha : float, default 0.05
        False-discovery rate across features.
    min_samples : int, default 100
        Fewer rows than this in either window: no verdict.

    Attributes
    ----------
    detectors_ : dict of str to Detector
        The fitted detector of each feature (empty when the reference was too small).
    n_reference_ : int
        Rows in the reference window.
    """

    _parameter_constraints: ClassVar[dict[str, Constraint]] = {
        "alpha": Interval(float, 0, 1, closed="neither"),
        "min_samples": Interval(int, 2, None, closed="left"),
    }

    def __init__(self, features: FeaturesConfig, *, alpha: float = 0.05, min_samples: int = 100) -> None:
        self.features = features
        self.alpha = alpha
        self.min_samples = min_samples
        validate_params(type(self).__name__, self._parameter_constraints,
                        {"alpha": alpha, "min_samples": min_samples})

    @classmethod
    def from_config(cls, features: FeaturesConfig, drift: DriftConfig) -> Self:
        """The sensor a model's ``features`` and ``drift`` settings describe."""
        return cls(features, alpha=drift.alpha, min_samples=drift.min_samples)

    def __repr__(self) -> str:
        return (f"DriftSensor(numeric={self.features.numeric!r}, categorical={self.features.categorical!r}, "
                f"alpha={self.alpha!r}, min_samples={self.min_samples!r})")

    def fit(self, reference: pd.DataFrame) -> Self:
        """Fit one detector per feature on the reference window; returns ``self``."""
        self.n_reference_ = len(reference)
        self.detectors_: dict[str, Detector] = {}
        if self.n_reference_ < self.min_samples:
            return self
        for column in self.features.all:
            detector: Detector = (KSDetector if column in self.features.numeric else ChiSquareDetector)(alpha=self.alpha)
            self.detectors_[column] = detector.fit(_column(reference, column, "reference"))
        return self

    def score(self, current: pd.DataFrame) -> DriftReport:
        """Test the current window against the reference.

        Raises
        ------
        NotFittedError
            Before :meth:`fit`.
        DataSourceError
            The window lacks a feature column.
        """
        if not hasattr(self, "n_reference_"):
            raise NotFittedError("This DriftSensor instance is not fitted yet; call 'fit' with a reference window first.")
        sizes = {"n_reference": self.n_reference_, "n_current": len(current)}
        if min(sizes.values()) < self.min_samples:
            return DriftReport(**sizes, reason=(
                f"insufficient data: {self.n_reference_} reference and {len(current)} current rows, "
                f"at least {self.min_samples} needed in each"))
        results = {name: detector.score(_column(current, name, "current"))
                   for name, detector in self.detectors_.items()}
        q_values = benjamini_hochberg([r.p_value for r in results.values()])
        features = tuple(
            FeatureDrift(feature=name, test=r.test, statistic=r.statistic, p_value=r.p_value, q_value=float(q),
                         drifted=bool(q <= self.alpha), n_reference=r.n_reference, n_current=r.n_current)
            for (name, r), q in zip(results.items(), q_values)
            if not math.isnan(r.p_value)
        )
        if not features:
            return DriftReport(**sizes, reason="no feature could be tested: none configured, or all values missing")
        n_drifted = sum(f.drifted for f in features)
        return DriftReport(
            **sizes, features=features, share_drifted=n_drifted / len(features), n_drifted=n_drifted,
            n_features=len(features), min_q_value=float(np.min([f.q_value for f in features])),
            detected=n_drifted > 0,
        )


def _column(frame: pd.DataFrame, column: str, window: str) -> Any:
    if column not in frame.columns:
        raise DataSourceError(f"The {window} window has no feature column {column!r}")
    return frame[column]
