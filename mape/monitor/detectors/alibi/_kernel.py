"""What the alibi-detect kernel two-sample tests (MMD, LSDD) share behind :class:`MultivariateDetector`.

Who calls it: :class:`~mape.monitor.detectors.alibi.mmd.AlibiMMDDetector` and
:class:`~mape.monitor.detectors.alibi.lsdd.AlibiLSDDDetector` derive from
:class:`AlibiKernelDetector`. It keeps the contract of
:class:`~mape.monitor.detectors.mmd.MultivariateDetector` (and the built-in
:class:`~mape.monitor.detectors.MMDDetector`'s handling of tables): rows with
a missing or infinite value are dropped and counted, each side is cut to
``max_samples`` rows at random, a DataFrame is read by the reference's column
names. alibi-detect always runs on its PyTorch backend here (its default,
TensorFlow, is not installed), in float32, and draws its permutations from
torch's generator, seeded with ``random_state`` around each call
(:func:`~mape.monitor.detectors.alibi._backend.seeded`), so a verdict is a
function of the data.

alibi-detect builds the whole ``(n + m)²`` kernel matrix (the built-in
``MMDDetector`` works in tiles): at the default ``max_samples`` of 5,000 a
side that is 400 MB in float32.
"""

from __future__ import annotations

import math
from abc import abstractmethod
from dataclasses import dataclass
from types import ModuleType
from typing import Any, ClassVar

import numpy as np
import pandas as pd

from mape.monitor.detectors.alibi._backend import alibi_cd, seeded, torch_device
from mape.monitor.detectors.mmd import MMDResult, MultivariateDetector, Table, _subsample, _table


@dataclass(frozen=True)
class AlibiKernelResult(MMDResult):
    """An :class:`~mape.monitor.detectors.MMDResult` from alibi-detect (``test`` is ``"mmd"`` or ``"lsdd"``).

    ``statistic`` is alibi-detect's distance (MMD² or LSDD), ``bandwidth``
    its Gaussian kernel's σ (median heuristic on the reference).

    Attributes
    ----------
    distance_threshold : float
        The distance above which the permutation test flags drift at ``alpha``.
    """

    distance_threshold: float = math.nan


class AlibiKernelDetector(MultivariateDetector):
    """Base of the alibi-detect kernel tests: subclasses implement :meth:`_build` and set ``test_name``.

    Attributes
    ----------
    alibi_detector_ : alibi_detect.cd detector or None
        The fitted detector; ``None`` with fewer than two reference rows.
        Not pickled: it is rebuilt (seeded, so identical) when an unpickled
        detector is loaded.
    reference_ : numpy.ndarray
        The reference rows the test uses (without missing values, cut to ``max_samples``).
    n_reference_ : int
        Reference rows without missing values (before subsampling).
    n_missing_reference_ : int
        Rows dropped from the reference for a missing or infinite value.
    n_features_in_ : int
        Number of columns.
    feature_names_in_ : numpy.ndarray or None
        The reference's column names when it was a DataFrame.
    """

    alpha: float
    n_permutations: int
    max_samples: int
    random_state: int
    device: str

    @abstractmethod
    def _build(self, cd: ModuleType, reference: np.ndarray, device: Any) -> Any:
        """The alibi-detect detector on ``reference`` (float32 rows, as :meth:`_prepare` gives them)."""

    def _learn(self, reference: np.ndarray) -> None:
        """Learn what :meth:`_prepare` needs from the reference rows (nothing by default)."""

    def _prepare(self, values: np.ndarray) -> np.ndarray:
        """The rows as alibi-detect gets them: float32 by default."""
        return values.astype(np.float32)

    def _fit(self, reference: Table) -> None:
        alibi_cd()  # fails here, with the install hint, when alibi-detect is absent
        values, missing, names = _table(reference)
        rng = np.random.default_rng([0, self.random_state])
        self.reference_ = _subsample(values, self.max_samples, rng)
        self.n_reference_ = int(values.shape[0])
        self.n_missing_reference_ = missing
        self.n_features_in_ = int(values.shape[1])
        self.feature_names_in_ = names
        self._learn(self.reference_)
        self.alibi_detector_ = self._built()

    def _built(self) -> Any:
        if self.reference_.shape[0] < 2:
            return None
        with seeded(self.random_state):
            device = torch_device(self.device, type(self).__name__)
            return self._build(alibi_cd(), self._prepare(self.reference_), device)

    def _score(self, current: Table) -> AlibiKernelResult:
        if isinstance(current, pd.DataFrame) and self.feature_names_in_ is not None:
            absent = [name for name in self.feature_names_in_ if name not in current.columns]
            if absent:
                raise ValueError(f"The current sample lacks the reference's columns {absent}.")
            current = current[list(self.feature_names_in_)]
        values, missing, _ = _table(current)
        if values.shape[1] != self.n_features_in_:
            raise ValueError(f"{type(self).__name__} was fitted on {self.n_features_in_} features; "
                             f"the current sample has {values.shape[1]}.")
        tested = _subsample(values, self.max_samples, np.random.default_rng([1, self.random_state]))
        n_ref, n_cur = int(self.reference_.shape[0]), int(tested.shape[0])
        statistic = p_value = threshold = bandwidth = math.nan
        if self.alibi_detector_ is not None and n_cur >= 2:
            with seeded(self.random_state):
                data = self.alibi_detector_.predict(self._prepare(tested))["data"]
            statistic, p_value = float(data["distance"]), float(data["p_val"])
            threshold = float(data["distance_threshold"])
            bandwidth = _bandwidth(self.alibi_detector_)
        return AlibiKernelResult(
            test=self.test_name, statistic=statistic, p_value=p_value, n_reference=self.n_reference_,
            n_current=int(values.shape[0]), drift_detected=bool(p_value < self.alpha),
            n_missing_reference=self.n_missing_reference_, n_missing_current=missing, bandwidth=bandwidth,
            n_reference_tested=n_ref, n_current_tested=n_cur, n_permutations=self.n_permutations,
            distance_threshold=threshold,
        )

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state.pop("alibi_detector_", None)  # holds closures (LSDD's normalisation) that do not pickle
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        if "reference_" in state:
            self.alibi_detector_ = self._built()


def _bandwidth(detector: Any) -> float:
    """σ of the Gaussian kernel of an alibi-detect detector (a private attribute of its backend), NaN if absent."""
    kernel = getattr(getattr(detector, "_detector", detector), "kernel", None)
    sigma = getattr(kernel, "sigma", None)
    try:
        return float(sigma.detach().cpu().reshape(-1)[0])  # type: ignore[union-attr]
    except (AttributeError, IndexError, TypeError, ValueError):
        return math.nan
