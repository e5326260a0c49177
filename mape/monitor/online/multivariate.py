"""The shape of streaming drift detectors on rows: fit a reference table, ``update(row)``, read ``drift_detected``.

Who calls it: the online MMD and LSDD detectors of the alibi-detect backend
(:mod:`mape.monitor.detectors.alibi`) subclass
:class:`MultivariateOnlineDetector`; ``tests/monitor/alibi/test_online.py``
checks them against the contract written here.

Why not :class:`~mape.monitor.online.base.OnlineDetector`: that base takes one
number per update and learns its in-control mean and standard deviation from
a warm-up of the stream. A multivariate test takes a row of several features
per update and compares a sliding window of rows with a reference sample,
whose thresholds it configures beforehand; so it learns from a reference
table at :meth:`MultivariateOnlineDetector.fit`, as a two-sample detector
does. Everything else is as in ``OnlineDetector`` (river's
``DriftDetector``): keyword-only parameters validated by
``_parameter_constraints``, ``update`` returns ``self``, ``drift_detected``
is true for the one update that found a change, the next update starts
afresh, state learned from data ends in ``_``, and the expected number of
in-control updates between false alarms is called ``arl0``
(:meth:`for_run_length`, as ``CUSUM.for_run_length``).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import Any, ClassVar, Self

import numpy as np
import numpy.typing as npt
import pandas as pd

from mape.errors import NotFittedError
from mape.monitor.detectors._params import Constraint, Parameterized


class MultivariateOnlineDetector(Parameterized, ABC):
    """Base class of streaming drift detectors whose values are rows of several features.

    Subclasses declare ``_parameter_constraints``, a keyword-only ``__init__``
    that assigns its parameters (``arl0`` among them) and calls
    ``self._reset()``, and implement :meth:`_fit` (learn the reference,
    configure thresholds), :meth:`_restart` (a fresh stream on the same
    reference) and :meth:`_step` (one row; whether it completes a detection).

    A row with a missing (NaN) or infinite value is skipped and counted in
    ``n_missing_``. After a detection the next update starts afresh
    (``restarts_after_drift``): the sliding window is refilled from the new
    rows, the reference and thresholds stay.

    Attributes
    ----------
    n_features_in_ : int
        Number of features (columns of the reference).
    feature_names_in_ : numpy.ndarray or None
        The reference's column names when it was a DataFrame: rows given as
        a mapping or a Series are read by these names.
    n_seen_ : int
        Rows fed since :meth:`fit` or :meth:`reset` (skipped ones excluded).
    n_missing_ : int
        Rows skipped for a missing or infinite value.
    n_detections_ : int
        Changes detected.
    """

    _parameter_constraints: ClassVar[dict[str, Constraint]] = {}
    #: Whether the update after a detection starts afresh.
    restarts_after_drift: ClassVar[bool] = True

    arl0: float

    def _reset(self) -> None:
        """Validate the parameters, forget the reference and the stream."""
        self._validate_params()
        for name in [n for n in vars(self) if n.endswith("_") and not n.startswith("_")]:
            delattr(self, name)
        self._drift = False

    @classmethod
    def for_run_length(cls, arl0: float, **params: Any) -> Self:
        """A detector whose expected in-control run length between false alarms is ``arl0`` updates."""
        return cls(arl0=arl0, **params)

    def fit(self, reference: npt.ArrayLike | pd.DataFrame) -> Self:
        """Learn the reference table (rows are samples) and configure the thresholds; returns ``self``."""
        self._reset()
        values, names = _reference_table(reference)
        self.n_features_in_ = int(values.shape[1])
        self.feature_names_in_ = names
        self._fit(values)
        self._start_stream()
        return self

    def reset(self) -> Self:
        """Forget the stream (the reference and thresholds stay); returns ``self``."""
        self._check_fitted()
        self._start_stream()
        return self

    def _start_stream(self) -> None:
        self.n_seen_ = 0
        self.n_missing_ = 0
        self.n_detections_ = 0
        self._drift = False
        self._restart()

    def _check_fitted(self) -> None:
        if not hasattr(self, "n_features_in_"):
            raise NotFittedError(
                f"This {type(self).__name__} instance is not fitted yet; call 'fit' with a reference sample first.")

    @property
    def drift_detected(self) -> bool:
        """Whether the last update detected a change."""
        return self._drift

    def update(self, x: npt.ArrayLike | pd.Series | Mapping[str, float]) -> Self:
        """Feed one row; returns ``self``. Read :attr:`drift_detected` afterwards.

        Raises
        ------
        NotFittedError
            Before :meth:`fit`.
        ValueError
            The row does not have the reference's features.
        """
        self._check_fitted()
        if self._drift:
            self._drift = False
            if self.restarts_after_drift:
                self._restart()
        row = self._row(x)
        if not np.isfinite(row).all():
            self.n_missing_ += 1
            return self
        self.n_seen_ += 1
        if self._step(row):
            self._drift = True
            self.n_detections_ += 1
        return self

    def _row(self, x: npt.ArrayLike | pd.Series | Mapping[str, float]) -> np.ndarray:
        if isinstance(x, (pd.Series, Mapping)) and self.feature_names_in_ is not None:
            absent = [name for name in self.feature_names_in_ if name not in x]
            if absent:
                raise ValueError(f"The row lacks the reference's features {absent}.")
            x = [x[name] for name in self.feature_names_in_]
        row = np.asarray(x, dtype=float).ravel()
        if row.size != self.n_features_in_:
            raise ValueError(f"{type(self).__name__} was fitted on {self.n_features_in_} features; "
                             f"the row has {row.size}.")
        return row

    @abstractmethod
    def _fit(self, reference: np.ndarray) -> None:
        """Learn the reference rows (2-D, finite) and configure the thresholds."""

    @abstractmethod
    def _restart(self) -> None:
        """Start a fresh stream on the fitted reference."""

    @abstractmethod
    def _step(self, row: np.ndarray) -> bool:
        """Take one finite row; return whether it completes a detection."""


def _reference_table(reference: npt.ArrayLike | pd.DataFrame) -> tuple[np.ndarray, np.ndarray | None]:
    """The reference as a 2-D float array without rows holding a missing or infinite value, and its column names."""
    names = None
    if isinstance(reference, pd.DataFrame):
        names = np.asarray(reference.columns, dtype=object)
        values = reference.apply(pd.to_numeric).to_numpy(dtype=float, na_value=np.nan)
    else:
        values = np.asarray(reference, dtype=float)
        if values.ndim == 1:
            values = values.reshape(-1, 1)
    if values.ndim != 2:
        raise ValueError(f"A reference must be a table (2-D: rows by features); got {values.ndim} dimensions.")
    return values[np.isfinite(values).all(axis=1)], names
