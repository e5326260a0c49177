"""The Monitor stage: sensors measure every managed model and write Observation rows.

Who calls it: the controller, once per tick, through :class:`Monitor`.
Detectors (``detectors/``) are two-sample tests; sensors (``sensors/``) turn a
model's windows of data into reports (drift across features, performance on
labelled predictions); :mod:`mape.monitor.stage` reads the data, runs the
sensors and writes the observations that the Analyze stage reads.
"""

from __future__ import annotations

from mape.monitor.stage import ModelSummary, Monitor, MonitorReport, StageError

__all__ = ["ModelSummary", "Monitor", "MonitorReport", "StageError"]
