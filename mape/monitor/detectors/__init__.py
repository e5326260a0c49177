"""Two-sample drift detectors, one per file: fit on a reference sample, score a current one.

Who calls it: the drift sensor picks :class:`KSDetector` (or
:class:`CVMDetector`) for numeric features and :class:`ChiSquareDetector` for
categorical ones; each result carries an effect size from
:mod:`~mape.monitor.detectors.effect_size`. The common detector tests iterate
over :data:`DETECTORS`, so a new detector is added there too.
"""

from __future__ import annotations

from mape.monitor.detectors.base import Detector, DetectorResult
from mape.monitor.detectors.chi2 import ChiSquareDetector
from mape.monitor.detectors.cvm import CVMDetector
from mape.monitor.detectors.ks import KSDetector
from mape.monitor.detectors.mmd import MMDDetector, MMDResult, MultivariateDetector  # tables; not in DETECTORS

#: Every public detector class; ``tests/monitor/test_detectors_common.py`` checks each one.
DETECTORS: tuple[type[Detector], ...] = (KSDetector, CVMDetector, ChiSquareDetector)

__all__ = ["DETECTORS", "CVMDetector", "ChiSquareDetector", "Detector", "DetectorResult", "KSDetector"]
__all__ += ["MMDDetector", "MMDResult", "MultivariateDetector"]
