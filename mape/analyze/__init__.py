"""The Analyze stage: symptom rules over observed metrics, with persistence and hysteresis.

Who calls it: the controller, once per tick after the Monitor stage, through
:class:`mape.analyze.stage.Analyzer`; it reads Observation rows and writes
Symptom rows, which the Plan stage reads.
"""

from __future__ import annotations

from mape.analyze.stage import (
    FRESHNESS_METRICS,
    STALE_SIGNAL,
    AnalyzeError,
    Analyzer,
    AnalyzeReport,
    ModelSymptoms,
    SymptomView,
)

__all__ = ["FRESHNESS_METRICS", "STALE_SIGNAL", "AnalyzeError", "AnalyzeReport", "Analyzer", "ModelSymptoms",
           "SymptomView"]
