"""Data drift across all features of a model, corrected for testing many features at once.

Who calls it: the Monitor stage fits one :class:`DriftSensor` per production
version of a model on that version's training window of the inference log, and
scores the current window every tick; ``mape drift`` runs one on two files.
The report's summary becomes the ``drift.*`` observations that the Analyze
stage and the policies read.

A feature drifted when two things hold: its shift is significant after the
Benjamini-Hochberg correction across features (``q <= alpha``), and it is
large enough to matter (effect size at least its floor). The second
condition is what keeps large windows quiet: at a million rows KS finds a
0.02-sigma shift every time, and nobody retrains a model for that.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Literal, Self

import numpy as np
import pandas as pd

from mape.config import DriftConfig, FeaturesConfig
from mape.errors import DataSourceError, InvalidParameterError, NotFittedError
from mape.monitor.detectors import ChiSquareDetector, CVMDetector, Detector, DetectorResult, KSDetector
from mape.monitor.detectors._params import Constraint, Interval, Options, validate_params
from mape.monitor.detectors.effect_size import EFFECTS
from mape.monitor.multiple_testing import benjamini_hochberg

#: Default effect floors: a feature whose effect size is below its floor is not drifted, however small its q-value.
#:
#: - ``wasserstein`` 0.1: the distribution moved by a tenth of the reference's
#:   standard deviation (a pure shift of 0.1 sigma has exactly this distance);
#:   Evidently's default threshold for its normed Wasserstein distance too.
#: - ``psi`` 0.1: the credit-scoring rule of thumb's "no significant change"
#:   bound. On 20 quantile bins a normal shifted by ``d`` sigma has a PSI of
#:   about ``d**2``, so 0.1 is about a 0.3-sigma shift: PSI is the least
#:   sensitive of the three at its conventional bound.
#: - ``js`` 0.05: the Jensen-Shannon distance of a 0.12-sigma shift on 20
#:   quantile bins (JS divergence is about PSI / (8 ln 2) for small shifts, so
#:   the distance is about ``0.42 * d``), in line with the Wasserstein floor;
#:   for categories, 0.05 is for instance a 50/50 split turning 44/56.
#:
#: Sampling noise alone, between two samples of one normal distribution,
#: gives a Wasserstein effect of about ``1.3 * sqrt(1/n + 1/m)`` (0.04 at
#: 2,000 + 2,000 rows, 0.006 at 100,000 + 100,000), a 20-bin JS distance of
#: about ``1.8 * sqrt(1/n + 1/m)`` (0.057, 0.008) and a 20-bin PSI of about
#: ``19 * (1/n + 1/m)`` (0.019, 0.0004). The floors bite on large windows,
#: where the test finds everything; on small windows noise alone comes near
#: them and the test decides.
DEFAULT_EFFECT_FLOORS: Mapping[str, float] = {"wasserstein": 0.1, "psi": 0.1, "js": 0.05}


@dataclass(frozen=True)
class FeatureDrift:
    """The test of one feature: raw p-value, Benjamini-Hochberg q-value, effect size and verdicts.

    ``significant`` is ``q_value <= alpha``; ``drifted`` is ``significant``
    and ``effect_size >= `` the floor of ``effect_name`` (a NaN effect size
    never drifts).
    """

    feature: str
    test: str
    statistic: float
    p_value: float
    q_value: float
    drifted: bool
    n_reference: int
    n_current: int
    effect_size: float = math.nan
    effect_name: str = ""
    significant: bool = False


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
    max_effect_size : float or None
        The largest effect size of any feature (NaN ones ignored): how far the
        farthest feature moved. Features may report different effect sizes
        (Wasserstein for numeric, Jensen-Shannon for categorical ones by
        default), so compare it with care; ``None`` without a verdict or when
        no feature has an effect size.
    missing_features : tuple of str
        Features the current window lacks, not tested (``score(...,
        missing="skip")``: the data-quality sensor reports them).
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
    max_effect_size: float | None = None
    missing_features: tuple[str, ...] = ()

    @property
    def insufficient_data(self) -> bool:
        return self.detected is None

    def __str__(self) -> str:
        missing = f"; not tested, missing: {', '.join(self.missing_features)}" if self.missing_features else ""
        if self.detected is None:
            return f"no drift verdict ({self.reason}){missing}"
        effect = "" if self.max_effect_size is None else f", max effect {self.max_effect_size:.3g}"
        return (f"{self.n_drifted}/{self.n_features} features drifted (share {self.share_drifted:.2f}, "
                f"min q {self.min_q_value:.3g}{effect}){missing}")


class DriftSensor:
    """Tests every configured feature of a current window against a reference window.

    Numeric features get a :class:`~mape.monitor.detectors.KSDetector` (or a
    :class:`~mape.monitor.detectors.CVMDetector`), categorical ones a
    :class:`~mape.monitor.detectors.ChiSquareDetector`; each test also
    reports an effect size. The p-values are adjusted with Benjamini-Hochberg;
    a feature is *significant* when its q-value is at most ``alpha`` (so
    ``alpha`` bounds the expected share of falsely flagged features) and
    *drifted* when it is significant and its effect size is at least the
    floor of its kind (``effect_floors``), so a trivially small shift on a
    large window is not drift.

    Parameters
    ----------
    features : FeaturesConfig
        The numeric and categorical feature columns.
    alpha : float, default 0.05
        False-discovery rate across features.
    min_samples : int, default 100
        Fewer rows than this in either window: no verdict.
    numeric_test : {"ks", "cvm"}, default "ks"
        Kolmogorov-Smirnov or Cramér-von Mises for numeric features.
    numeric_effect : {"wasserstein", "psi", "js"}, default "wasserstein"
        The effect size of numeric features.
    categorical_effect : {"js", "psi"}, default "js"
        The effect size of categorical features.
    effect_floors : mapping of str to float, optional
        Smallest effect size, per kind of effect, for a significant feature to
        count as drifted; kinds not given keep :data:`DEFAULT_EFFECT_FLOORS`
        (0.1 for Wasserstein and PSI, 0.05 for Jensen-Shannon). All zeros give
        the test's verdict alone.
    backend : {"builtin", "alibi"}, default "builtin"
        Who computes each feature's test: mape's detectors, or alibi-detect's
        (:class:`~mape.monitor.detectors.alibi.AlibiKSDetector`,
        :class:`~mape.monitor.detectors.alibi.AlibiCVMDetector`,
        :class:`~mape.monitor.detectors.alibi.AlibiChiSquareDetector`; the
        optional extra ``mape[alibi]``, imported at :meth:`fit`). The
        correction, effect sizes and floors are mape's either way.

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
        "numeric_test": Options(("ks", "cvm")),
        "numeric_effect": Options(EFFECTS),
        "categorical_effect": Options(("js", "psi")),
        "backend": Options(("builtin", "alibi")),
    }

    def __init__(self, features: FeaturesConfig, *, alpha: float = 0.05, min_samples: int = 100,
                 numeric_test: Literal["ks", "cvm"] = "ks",
                 numeric_effect: Literal["wasserstein", "psi", "js"] = "wasserstein",
                 categorical_effect: Literal["js", "psi"] = "js",
                 effect_floors: Mapping[str, float] | None = None,
                 backend: Literal["builtin", "alibi"] = "builtin") -> None:
        self.features = features
        self.alpha = alpha
        self.min_samples = min_samples
        self.numeric_test = numeric_test
        self.numeric_effect = numeric_effect
        self.categorical_effect = categorical_effect
        self.backend = backend
        validate_params(type(self).__name__, self._parameter_constraints,
                        {"alpha": alpha, "min_samples": min_samples, "numeric_test": numeric_test,
                         "numeric_effect": numeric_effect, "categorical_effect": categorical_effect,
                         "backend": backend})
        self.effect_floors = _floors(effect_floors)
        if backend == "alibi":  # the backend's package is imported only when configured; alibi-detect at fit
            from mape.monitor.detectors.alibi import require_alibi

            require_alibi()

    @classmethod
    def from_config(cls, features: FeaturesConfig, drift: DriftConfig) -> Self:
        """The sensor a model's ``features`` and ``drift`` settings describe."""
        return cls(features, alpha=drift.alpha, min_samples=drift.min_samples, numeric_test=drift.numeric_test,
                   numeric_effect=drift.numeric_effect, categorical_effect=drift.categorical_effect,
                   effect_floors=drift.effect_floors, backend=drift.backend)

    def __repr__(self) -> str:
        return (f"DriftSensor(numeric={self.features.numeric!r}, categorical={self.features.categorical!r}, "
                f"alpha={self.alpha!r}, min_samples={self.min_samples!r}, numeric_test={self.numeric_test!r}, "
                f"numeric_effect={self.numeric_effect!r}, categorical_effect={self.categorical_effect!r}, "
                f"effect_floors={self.effect_floors!r}, backend={self.backend!r})")

    def _detector(self, column: str) -> Detector:
        if self.backend == "alibi":
            from mape.monitor.detectors import alibi

            if column in self.features.numeric:
                numeric = alibi.AlibiKSDetector if self.numeric_test == "ks" else alibi.AlibiCVMDetector
                return numeric(alpha=self.alpha, effect=self.numeric_effect)
            return alibi.AlibiChiSquareDetector(alpha=self.alpha, effect=self.categorical_effect)
        if column in self.features.numeric:
            numeric = KSDetector if self.numeric_test == "ks" else CVMDetector
            return numeric(alpha=self.alpha, effect=self.numeric_effect)
        return ChiSquareDetector(alpha=self.alpha, effect=self.categorical_effect)

    def fit(self, reference: pd.DataFrame) -> Self:
        """Fit one detector per feature on the reference window; returns ``self``."""
        self.n_reference_ = len(reference)
        self.detectors_: dict[str, Detector] = {}
        if self.n_reference_ < self.min_samples:
            return self
        for column in self.features.all:
            self.detectors_[column] = self._detector(column).fit(_column(reference, column, "reference"))
        return self

    def score(self, current: pd.DataFrame, *, missing: Literal["raise", "skip"] = "raise") -> DriftReport:
        """Test the current window against the reference.

        Parameters
        ----------
        current : DataFrame
            The current window.
        missing : {"raise", "skip"}, default "raise"
            A feature column the window lacks: an error, or not tested and
            listed in :attr:`DriftReport.missing_features` (the Monitor stage
            skips: a missing column is the data-quality sensor's finding, and
            the other features are still tested).

        Raises
        ------
        NotFittedError
            Before :meth:`fit`.
        DataSourceError
            The window lacks a feature column and ``missing`` is ``"raise"``.
        """
        if not hasattr(self, "n_reference_"):
            raise NotFittedError("This DriftSensor instance is not fitted yet; call 'fit' with a reference window first.")
        if missing not in ("raise", "skip"):
            raise InvalidParameterError.for_parameter("missing", "DriftSensor.score", "one of 'raise', 'skip'", missing)
        absent = () if missing == "raise" else tuple(n for n in self.features.all if n not in current.columns)
        sizes = {"n_reference": self.n_reference_, "n_current": len(current), "missing_features": absent}
        if min(self.n_reference_, len(current)) < self.min_samples:
            return DriftReport(**sizes, reason=(
                f"insufficient data: {self.n_reference_} reference and {len(current)} current rows, "
                f"at least {self.min_samples} needed in each"))
        results = {name: detector.score(_column(current, name, "current"))
                   for name, detector in self.detectors_.items() if name not in absent}
        q_values = benjamini_hochberg([r.p_value for r in results.values()])
        features = tuple(
            _feature_drift(name, r, float(q), self.alpha, self.effect_floors.get(r.effect_name, 0.0))
            for (name, r), q in zip(results.items(), q_values)
            if not math.isnan(r.p_value)
        )
        if not features:
            return DriftReport(**sizes, reason="no feature could be tested: none configured, or all values missing")
        n_drifted = sum(f.drifted for f in features)
        effects = [f.effect_size for f in features if not math.isnan(f.effect_size)]
        return DriftReport(
            **sizes, features=features, share_drifted=n_drifted / len(features), n_drifted=n_drifted,
            n_features=len(features), min_q_value=float(np.min([f.q_value for f in features])),
            detected=n_drifted > 0, max_effect_size=max(effects) if effects else None,
        )


def _feature_drift(name: str, result: DetectorResult, q_value: float, alpha: float, floor: float) -> FeatureDrift:
    significant = q_value <= alpha
    return FeatureDrift(
        feature=name, test=result.test, statistic=result.statistic, p_value=result.p_value, q_value=q_value,
        drifted=bool(significant and result.effect_size >= floor), n_reference=result.n_reference,
        n_current=result.n_current, effect_size=float(result.effect_size), effect_name=result.effect_name,
        significant=bool(significant),
    )


def _floors(given: Mapping[str, float] | None) -> dict[str, float]:
    """The default floors updated with ``given``; unknown kinds and negative or non-numeric floors are refused."""
    floors = dict(DEFAULT_EFFECT_FLOORS)
    if given is None:
        return floors
    valid = isinstance(given, Mapping) and all(
        name in EFFECTS and Interval(float, 0, None, closed="left").is_satisfied_by(value)
        for name, value in given.items())
    if not valid:
        raise InvalidParameterError.for_parameter(
            "effect_floors", "DriftSensor", "a mapping of 'wasserstein', 'psi' or 'js' to floats >= 0", given)
    floors.update({name: float(value) for name, value in given.items()})
    return floors


def _column(frame: pd.DataFrame, column: str, window: str) -> Any:
    if column not in frame.columns:
        raise DataSourceError(f"The {window} window has no feature column {column!r}")
    return frame[column]
