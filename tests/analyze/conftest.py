"""Every Analyze test that drives a ``Loop`` runs twice: with the controller's tick rows recorded (the pass reads
the fleet's last ticks in one query) and without (each series is read on its own); the outcomes must not differ."""

from __future__ import annotations

import pytest


@pytest.fixture(params=["fleet-reads", "series-reads"], autouse=True)
def analyze_reads(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    loop = getattr(request.module, "Loop", None)
    if loop is not None:
        monkeypatch.setattr(loop, "record_ticks", request.param == "fleet-reads", raising=False)
    return request.param
