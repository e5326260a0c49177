"""The shape every drift detector shares: fit on a reference sample, score a current sample.

Who calls it: the drift sensor (:mod:`mape.monitor.sensors.drift`) fits one
detector per feature on the reference window and scores each current window;
``tests/monitor/test_detectors_common.py`` checks every detector against the
contract written here.

The contract, after river and scikit-learn: ``__init__`` takes keyword-only
parameters, stores them verbatim and calls :meth:`Detector._reset`, which
validates them against the class's ``_parameter_constraints`` and forgets any
fitted state; :meth:`Detector.fit` returns ``self`` and sets attributes ending
in ``_``; :meth:`Detector.score` before ``fit`` raises
:class:`~mape.errors.NotFittedError`. Detectors are plain objects: they print
their changed parameters, clone and pickle.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Literal, Self

import numpy as np
import numpy.typing as npt
import pandas as pd

from mape.errors import NotFittedError
from mape.monitor.detectors._params import Constraint, Parameterized


@dataclass(frozen=True)
class DetectorResult:
    """One two-sample test of a current sample against the fitted reference.

    Attributes
    ----------
    test : str
        Short name of the test (``"ks"``, ``"cvm"``, ``"chi2"``).
    statistic : float
        The test statistic; NaN when either sample is empty.
    p_value : float
        The p-value of "both samples come from one distribution"; NaN when
        either sample is empty.
    n_reference, n_current : int
        Sample sizes after dropping missing values.
    drift_detected : bool
        ``p_value < alpha`` of the detector: the verdict of a single test. A
        sensor testing several features corrects across them instead, and
        also holds the effect size against a floor.
    n_missing_reference, n_missing_current : int
        Missing values (NaN, None) dropped from each sample.
    effect_size : float
        How far the current sample moved from the reference, on a scale that
        does not grow with the sample size (see
        :mod:`mape.monitor.detectors.effect_size`); NaN when either sample is
        empty or the detector reports none.
    effect_name : str
        Which effect size: ``"wasserstein"``, ``"psi"`` or ``"js"``; empty
        when the detector reports none.
    """

    test: str
    statistic: float
    p_value: float
    n_reference: int
    n_current: int
    drift_detected: bool
    n_missing_reference: int = 0
    n_missing_current: int = 0
    effect_size: float = math.nan
    effect_name: str = ""




class Detector(Parameterized, ABC):
    """Base class of two-sample drift detectors.

    Subclasses declare ``test_name``, ``kind`` (the data they accept:
    ``"numeric"`` or ``"categorical"``), ``_parameter_constraints``, a
    keyword-only ``__init__`` that assigns its parameters and calls
    ``self._reset()``, and implement :meth:`_fit` and :meth:`_score`.
    """

    test_name: ClassVar[str]
    kind: ClassVar[Literal["numeric", "categorical"]]
    _parameter_constraints: ClassVar[dict[str, Constraint]] = {}

    def _reset(self) -> None:
        """Validate the parameters and forget any fitted state."""
        self._validate_params()
        for name in self._fitted_attributes():
            delattr(self, name)

    def _fitted_attributes(self) -> list[str]:
        return [name for name in vars(self) if name.endswith("_") and not name.startswith("_")]


    def fit(self, reference: npt.ArrayLike | pd.Series) -> Self:
        """Learn the reference sample; returns ``self``."""
        self._reset()
        self._fit(reference)
        return self

    def score(self, current: npt.ArrayLike | pd.Series) -> DetectorResult:
        """Test ``current`` against the reference.

        Raises
        ------
        NotFittedError
            If :meth:`fit` has not been called.
        """
        if not self._fitted_attributes():
            raise NotFittedError(
                f"This {type(self).__name__} instance is not fitted yet; call 'fit' with a reference sample first."
            )
        return self._score(current)

    @abstractmethod
    def _fit(self, reference: npt.ArrayLike | pd.Series) -> None: ...

    @abstractmethod
    def _score(self, current: npt.ArrayLike | pd.Series) -> DetectorResult: ...


def numeric_sample(values: npt.ArrayLike | pd.Series) -> tuple[np.ndarray, int]:
    """The values as a float array without NaNs, and how many NaNs were dropped.

    >>> numeric_sample([1, None, 2.5, float("nan")])
    (array([1. , 2.5]), 2)
    """
    if isinstance(values, pd.Series):
        array = pd.to_numeric(values).to_numpy(dtype=float, na_value=np.nan)
    else:
        array = np.asarray(values).ravel()
        if array.dtype.kind not in "biuf":
            array = pd.to_numeric(pd.Series(array)).to_numpy(dtype=float, na_value=np.nan)
        array = array.astype(float, copy=False)
    missing = np.isnan(array)
    n_missing = int(np.count_nonzero(missing))
    if n_missing == 0:  # the common case: no copy (callers sort into a new array anyway)
        return array, 0
    return array[~missing], n_missing


def category_counts(values: npt.ArrayLike | pd.Series) -> tuple[Mapping[Any, int], int]:
    """Counts of each category, missing values (None, NaN) excluded, and how many were missing.

    >>> category_counts(["a", "b", "a", None])
    ({'a': 2, 'b': 1}, 1)
    """
    series = values if isinstance(values, pd.Series) else pd.Series(np.asarray(values, dtype=object).ravel())
    missing = int(series.isna().sum())
    counts = series.dropna().value_counts(sort=False)
    return {key: int(count) for key, count in counts.items()}, missing
