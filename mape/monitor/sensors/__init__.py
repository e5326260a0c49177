"""Sensors: turn a model's windows of data into reports the Monitor stage writes as observations.

Who calls it: :mod:`mape.monitor.stage`. :class:`DriftSensor` tests every
feature against a reference window with a false-discovery-rate correction;
:class:`PerformanceSensor` scores labelled predictions.
"""

from __future__ import annotations

from mape.monitor.sensors.drift import DriftReport, DriftSensor, FeatureDrift
from mape.monitor.sensors.performance import PerformanceReport, PerformanceSensor

__all__ = ["DriftReport", "DriftSensor", "FeatureDrift", "PerformanceReport", "PerformanceSensor"]
