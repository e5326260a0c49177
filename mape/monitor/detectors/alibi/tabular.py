"""Drift of a whole table in one call: alibi-detect's ``TabularDrift`` (KS per numeric, chi-squared per categorical).

Who calls it: callers that want alibi-detect's mixed-type detector as it is,
one call per table, with mape's per-feature results, and the drift benchmark
(``benchmarks/drift_suite.py``), whose baseline is ``TabularDrift`` itself.
The drift sensor with ``backend: alibi`` tests one column at a time instead
(:class:`~mape.monitor.detectors.alibi.ks.AlibiKSDetector` and friends), so
that each feature drops its own missing values as the built-in backend does.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Literal, Self

import numpy as np
import numpy.typing as npt
import pandas as pd

from mape.errors import NotFittedError
from mape.monitor.detectors import effect_size
from mape.monitor.detectors._params import Constraint, Interval, Options, Parameterized
from mape.monitor.detectors.alibi._backend import alibi_cd
from mape.monitor.detectors.base import DetectorResult

Table = npt.ArrayLike | pd.DataFrame


class AlibiTabularDetector(Parameterized):
    """alibi-detect's ``TabularDrift`` on a table, with one :class:`DetectorResult` per feature.

    Numeric columns get alibi's Kolmogorov-Smirnov test (asymptotic
    p-value), categorical ones its chi-squared test (Yates' correction with
    two categories), all in one ``TabularDrift.predict`` call; the p-values
    are the feature-level ones, uncorrected (correct across features
    yourself, as the drift sensor does with Benjamini-Hochberg). Each result
    also carries mape's effect size (Wasserstein, PSI or Jensen-Shannon on
    the reference's binning), so results compare with the built-in
    detectors'.

    ``TabularDrift`` compares aligned rows, so a row with a missing value in
    any feature is dropped from its table and counted in every feature's
    ``n_missing_reference`` / ``n_missing_current``. Categories are coded as
    integers (the reference's in order of appearance, categories only the
    current table has after them), as alibi-detect expects.

    Parameters
    ----------
    alpha : float, default 0.05
        Significance level of each feature's
        :attr:`DetectorResult.drift_detected`; alibi's ``p_val``.
    categorical : sequence of str or int, default ()
        The categorical columns (names of a DataFrame's columns, or positions).
    numeric_effect : {"wasserstein", "psi", "js"}, default "wasserstein"
        The effect size of numeric features.
    categorical_effect : {"js", "psi"}, default "js"
        The effect size of categorical features.
    bins : int, default 20
        Reference-quantile bins of numeric features for ``"psi"`` and ``"js"``.

    Attributes
    ----------
    alibi_detector_ : alibi_detect.cd.TabularDrift or None
        The fitted detector; ``None`` when no reference row is complete.
    feature_names_in_ : list
        The columns, in order (positions for an array).
    n_reference_ : int
        Complete reference rows.
    n_missing_reference_ : int
        Reference rows dropped for a missing value.

    References
    ----------
    .. [1] Van Looveren, A. et al. (2019). Alibi Detect: algorithms for
       outlier, adversarial and drift detection. https://github.com/SeldonIO/alibi-detect

    Examples
    --------
    >>> import numpy as np, pandas as pd
    >>> rng = np.random.default_rng(5)
    >>> def table(shift):
    ...     return pd.DataFrame({"x": rng.normal(shift, 1.0, 800), "y": rng.normal(size=800),
    ...                          "colour": rng.choice(["red", "blue"], size=800)})
    >>> detector = AlibiTabularDetector(categorical=["colour"]).fit(table(0.0))
    >>> detector
    AlibiTabularDetector(categorical=['colour'])
    >>> results = detector.score(table(0.4))
    >>> {name: (r.test, r.drift_detected) for name, r in results.items()}
    {'x': ('ks', True), 'y': ('ks', False), 'colour': ('chi2', False)}
    """

    _parameter_constraints: ClassVar[dict[str, Constraint]] = {
        "alpha": Interval(float, 0, 1, closed="neither"),
        "numeric_effect": Options(effect_size.EFFECTS),
        "categorical_effect": Options(("js", "psi")),
        "bins": Interval(int, 2, None, closed="left"),
    }

    def __init__(self, *, alpha: float = 0.05, categorical: Sequence[str | int] = (),
                 numeric_effect: Literal["wasserstein", "psi", "js"] = "wasserstein",
                 categorical_effect: Literal["js", "psi"] = "js", bins: int = effect_size.DEFAULT_BINS) -> None:
        self.alpha = alpha
        self.categorical = categorical
        self.numeric_effect = numeric_effect
        self.categorical_effect = categorical_effect
        self.bins = bins
        self._reset()

    def _reset(self) -> None:
        self._validate_params()
        for name in [n for n in vars(self) if n.endswith("_") and not n.startswith("_")]:
            delattr(self, name)

    def fit(self, reference: Table) -> Self:
        """Learn the reference table; returns ``self``."""
        self._reset()
        cd = alibi_cd()
        frame = _frame(reference)
        unknown = [c for c in self.categorical if c not in frame.columns]
        if unknown:
            raise ValueError(f"The categorical columns {unknown} are not in the reference.")
        complete = frame.dropna()
        self.feature_names_in_ = list(frame.columns)
        self.n_reference_ = len(complete)
        self.n_missing_reference_ = len(frame) - len(complete)
        self._features = [_Feature.fit(complete[name], name in self.categorical, self.bins)
                          for name in self.feature_names_in_]
        self.alibi_detector_ = None
        if self.n_reference_:
            positions = {i: None for i, f in enumerate(self._features) if f.categories is not None}
            self.alibi_detector_ = cd.TabularDrift(self._encode(complete), p_val=self.alpha,
                                                   categories_per_feature=positions, correction="fdr")
        return self

    def score(self, current: Table) -> dict[Any, DetectorResult]:
        """Test ``current`` against the reference: one result per feature, by column.

        Raises
        ------
        NotFittedError
            If :meth:`fit` has not been called.
        ValueError
            The current table lacks a reference column.
        """
        if not hasattr(self, "feature_names_in_"):
            raise NotFittedError(
                f"This {type(self).__name__} instance is not fitted yet; call 'fit' with a reference sample first.")
        frame = _frame(current)
        absent = [name for name in self.feature_names_in_ if name not in frame.columns]
        if absent:
            raise ValueError(f"The current sample lacks the reference's columns {absent}.")
        complete = frame[self.feature_names_in_].dropna()
        n, m = self.n_reference_, len(complete)
        p_values = statistics = np.full(len(self._features), math.nan)
        if n and m and self.alibi_detector_ is not None:
            data = self.alibi_detector_.predict(self._encode(complete), drift_type="feature")["data"]
            p_values, statistics = data["p_val"].astype(float), data["distance"].astype(float)
        results = {}
        for feature, p_value, statistic in zip(self._features, p_values, statistics):
            kind = "categorical" if feature.categories is not None else "numeric"
            effect = self.categorical_effect if kind == "categorical" else self.numeric_effect
            results[feature.name] = DetectorResult(
                test="chi2" if kind == "categorical" else "ks", statistic=float(statistic), p_value=float(p_value),
                n_reference=n, n_current=m, drift_detected=bool(p_value < self.alpha),
                n_missing_reference=self.n_missing_reference_, n_missing_current=len(frame) - m,
                effect_size=feature.effect(complete[feature.name], effect) if n and m else math.nan,
                effect_name=effect,
            )
        return results

    def _encode(self, complete: pd.DataFrame) -> np.ndarray:
        """The complete rows as floats, categories replaced by their codes."""
        return np.column_stack([f.encode(complete[f.name]) for f in self._features]) if self._features else \
            np.empty((len(complete), 0))


@dataclass
class _Feature:
    """One reference column: its categories (their order gives the codes), or its sorted values and binning."""

    name: Any
    categories: dict[Any, int] | None
    counts: dict[Any, int]
    sorted_values: np.ndarray
    edges: np.ndarray
    bin_counts: np.ndarray

    @classmethod
    def fit(cls, column: pd.Series, categorical: bool, bins: int) -> _Feature:
        if categorical:
            counts = {key: int(count) for key, count in column.value_counts(sort=False).items()}
            codes = {category: code for code, category in enumerate(counts)}
            return cls(column.name, codes, counts, np.empty(0), np.empty(0), np.empty(0))
        values = np.sort(pd.to_numeric(column).to_numpy(dtype=float))
        edges = effect_size.quantile_edges(values, bins)
        return cls(column.name, None, {}, values, edges, effect_size.bin_counts(values, edges, assume_sorted=True))

    def encode(self, column: pd.Series) -> np.ndarray:
        if self.categories is None:
            return pd.to_numeric(column).to_numpy(dtype=float)
        codes = dict(self.categories)
        for category in column.unique():
            codes.setdefault(category, len(codes))
        return column.map(codes).to_numpy(dtype=float)

    def effect(self, column: pd.Series, name: str) -> float:
        if self.categories is not None:
            counts = {key: int(count) for key, count in column.value_counts(sort=False).items()}
            reference, current = effect_size.category_bin_counts(self.counts, counts)
        else:
            values = np.sort(pd.to_numeric(column).to_numpy(dtype=float))
            if name == "wasserstein":
                return effect_size.wasserstein_normalised(self.sorted_values, values)
            reference, current = self.bin_counts, effect_size.bin_counts(values, self.edges, assume_sorted=True)
        return effect_size.psi(reference, current) if name == "psi" else effect_size.jensen_shannon(reference, current)


def _frame(table: Table) -> pd.DataFrame:
    if isinstance(table, pd.DataFrame):
        return table
    array = np.asarray(table)
    if array.ndim == 1:
        array = array.reshape(-1, 1)
    if array.ndim != 2:
        raise ValueError(f"A sample must be a table (2-D: rows by features); got {array.ndim} dimensions.")
    return pd.DataFrame(array)
