"""The adaptation benchmark end to end in its quick mode: the real engine on two short streams."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks.adaptation import main


@pytest.mark.slow
def test_quick_benchmark_runs_the_engine_and_writes_its_report(tmp_path: Path) -> None:
    main(["--quick", "--out", str(tmp_path)])
    results = json.loads((tmp_path / "adaptation.json").read_text())
    assert (tmp_path / "adaptation" / "abrupt-covariate.svg").read_text().startswith("<svg")
    report = (tmp_path / "adaptation.md").read_text()
    assert "## Goals" in report and "![abrupt-covariate](adaptation/abrupt-covariate.svg)" in report

    stationary = results["scenarios"]["stationary"]["strategies"]
    assert stationary["mape"]["retrains"] == 0 and stationary["mape"]["false_retrains_per_1000_ticks"] == 0
    assert stationary["periodic"]["retrains"] == 1  # tick 24 of 40

    abrupt = results["scenarios"]["abrupt-covariate"]
    s = abrupt["strategies"]
    assert s["none"]["retrains"] == 0 and s["oracle"]["episodes"][0]["detection_delay"] == 0
    mape_episode = s["mape"]["episodes"][0]
    # retrain-on-drift waits for a data_drift symptom 2 hours old: never before 2 ticks after the onset
    assert mape_episode["detection_delay"] is not None and mape_episode["detection_delay"] >= 2
    assert mape_episode["latency"]["symptom"] <= mape_episode["latency"]["decision"] <= \
        mape_episode["latency"]["action"] < mape_episode["latency"]["effect"]
    assert s["mape"]["retrains"] >= 1 and s["mape"]["accuracy_area"] > s["none"]["accuracy_area"] + 0.02
    assert s["mape"]["energy_kwh"] is None or s["mape"]["energy_kwh"] >= 0  # codecarbon may read 0 for 0.1 s
    assert s["mape"]["train_cpu_s"] > 0 and s["mape"]["energy_cpu_estimate_kwh"] > 0

    engine = abrupt["engine"]
    assert engine["cpu_s_per_tick_median"] > 0 and engine["db_bytes_end"] > engine["db_bytes_start"]
    assert engine["rows_per_tick"]["tick"] == 1.0 and not engine["errors"]
    assert any(run["policy"] == "retrain-on-drift" for run in engine["runs"])
