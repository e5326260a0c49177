"""What alibi-detect's online MMD and LSDD detectors share behind :class:`MultivariateOnlineDetector`.

Who calls it: :class:`~mape.monitor.detectors.alibi.online_mmd.AlibiMMDOnline`
and :class:`~mape.monitor.detectors.alibi.online_lsdd.AlibiLSDDOnline` derive
from :class:`AlibiOnlineDetector`.

alibi-detect's online detectors [1]_ compare a sliding window of the last
``window_size`` rows with the reference, and configure one threshold per
time step at ``fit`` by bootstrap simulation on the reference, so that the
expected run time between false alarms is ``ert`` (our ``arl0``, counted from
the start of the stream). That configuration is the expensive part: its time
grows with ``n_bootstraps`` and the reference size (seconds at the defaults,
tens of seconds with 5,000 bootstraps on 1,000 rows); each update is cheap
(a kernel row against the reference). alibi-detect asks for ``n_bootstraps``
at least ten times ``arl0``.

Each update calls alibi-detect's ``score`` and its backend's ``get_threshold``
(what ``predict`` does) rather than ``predict``, which also appends to a
history that grows without bound on a long stream.
After a detection the next update starts afresh (alibi-detect's
``reset_state``). Pickling leaves the alibi-detect object out (LSDD's holds
closures); loading rebuilds it (seeded: the same thresholds) and replays the
last ``window_size`` rows, which gives the same state.

References
----------
.. [1] Cobb, O., Van Looveren, A. and Klaise, J. (2022). Sequential
   multivariate change detection with calibrated and memoryless false
   detection rates. AISTATS, PMLR 151, 226-239.
"""

from __future__ import annotations

import math
from abc import abstractmethod
from collections import deque
from types import ModuleType
from typing import Any

import numpy as np

from mape.monitor.detectors.alibi._backend import alibi_cd, seeded, torch_device
from mape.monitor.detectors.mmd import _subsample
from mape.monitor.online.multivariate import MultivariateOnlineDetector


class AlibiOnlineDetector(MultivariateOnlineDetector):
    """Base of alibi-detect's online detectors: subclasses implement :meth:`_build` and :meth:`_min_reference`.

    Attributes
    ----------
    alibi_detector_ : alibi_detect.cd online detector
        The fitted detector (rebuilt, not pickled).
    reference_ : numpy.ndarray
        The reference rows it was configured on (complete rows, cut to ``max_samples``).
    test_stat_, threshold_ : float
        The last update's statistic and the threshold it was held against (NaN before the first).
    """

    arl0: float
    window_size: int
    n_bootstraps: int
    max_samples: int
    random_state: int
    device: str

    @abstractmethod
    def _build(self, cd: ModuleType, reference: np.ndarray, device: Any) -> Any:
        """The alibi-detect online detector on ``reference`` (float32 rows, as :meth:`_prepare` gives them)."""

    @abstractmethod
    def _min_reference(self) -> int:
        """The fewest reference rows alibi-detect can configure the detector on."""

    def _learn(self, reference: np.ndarray) -> None:
        """Learn what :meth:`_prepare` needs from the reference rows (nothing by default)."""

    def _prepare(self, values: np.ndarray) -> np.ndarray:
        """Rows as alibi-detect gets them: float32 by default."""
        return values.astype(np.float32)

    def _fit(self, reference: np.ndarray) -> None:
        alibi_cd()  # fails here, with the install hint, when alibi-detect is absent
        self.reference_ = _subsample(reference, self.max_samples, np.random.default_rng([0, self.random_state]))
        needed = self._min_reference()
        if self.reference_.shape[0] < needed:
            raise ValueError(f"{type(self).__name__} with window_size={self.window_size} needs at least {needed} "
                             f"complete reference rows; got {self.reference_.shape[0]}.")
        self._learn(self.reference_)
        self.alibi_detector_ = self._built()
        self._recent: deque[np.ndarray] = deque(maxlen=self.window_size)

    def _built(self) -> Any:
        with seeded(self.random_state):
            device = torch_device(self.device, type(self).__name__)
            return self._build(alibi_cd(), self._prepare(self.reference_), device)

    def _restart(self) -> None:
        self.alibi_detector_.reset_state()
        self._recent.clear()
        self.test_stat_ = math.nan
        self.threshold_ = math.nan

    def _step(self, row: np.ndarray) -> bool:
        self._recent.append(row)
        return self._alibi_step(row)

    def _alibi_step(self, row: np.ndarray) -> bool:
        detector = self.alibi_detector_
        self.test_stat_ = float(detector.score(self._prepare(row)))
        # the backend object's threshold of step t: the public ``thresholds`` lists every step so far
        backend = getattr(detector, "_detector", detector)
        self.threshold_ = float(backend.get_threshold(detector.t))
        return self.test_stat_ > self.threshold_

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state.pop("alibi_detector_", None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        if "reference_" not in state:
            return
        self.alibi_detector_ = self._built()
        self.alibi_detector_.reset_state()
        # the window is all the state there is: after window_size rows the thresholds no longer change with time
        test_stat, threshold = self.test_stat_, self.threshold_
        for row in self._recent:
            self._alibi_step(row)
        self.test_stat_, self.threshold_ = test_stat, threshold
