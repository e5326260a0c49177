"""Streaming drift detectors, one per file: feed one value at a time, read ``drift_detected``.

Who calls it: a sensor that watches one stream of values (a model's error, a
feature, a latency) between the windowed two-sample tests of
:mod:`mape.monitor.detectors`, and ``benchmarks/online_detectors.py``. Each
detector can be configured by its expected run length between false alarms
(``for_run_length``); ``tests/monitor/test_online_detectors.py`` checks every
class in :data:`ONLINE_DETECTORS`.
"""

from __future__ import annotations

from mape.monitor.online.adwin import ADWIN
from mape.monitor.online.base import OnlineDetector
from mape.monitor.online.cusum import CUSUM, siegmund_arl, siegmund_threshold
from mape.monitor.online.multivariate import MultivariateOnlineDetector  # rows; alibi-detect's online MMD and LSDD
from mape.monitor.online.page_hinkley import PageHinkley

#: Every public streaming detector class.
ONLINE_DETECTORS: tuple[type[OnlineDetector], ...] = (PageHinkley, CUSUM, ADWIN)

__all__ = ["ADWIN", "CUSUM", "MultivariateOnlineDetector", "ONLINE_DETECTORS", "OnlineDetector", "PageHinkley",
           "siegmund_arl", "siegmund_threshold"]
