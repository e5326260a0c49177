"""Two-sample drift detectors, one per file: fit on a reference sample, score a current one.

Who calls it: the drift sensor picks :class:`KSDetector` for numeric features
and :class:`ChiSquareDetector` for categorical ones; the common detector
tests iterate over :data:`DETECTORS`, so a new detector is added there too.
"""

from __future__ import annotations

from mape.monitor.detectors.base import Detector, DetectorResult
from mape.monitor.detectors.chi2 import ChiSquareDetector
from mape.monitor.detectors.ks import KSDetector

#: Every public detector class; ``tests/monitor/test_detectors_common.py`` checks each one.
DETECTORS: tuple[type[Detector], ...] = (KSDetector, ChiSquareDetector)

__all__ = ["DETECTORS", "ChiSquareDetector", "Detector", "DetectorResult", "KSDetector"]
