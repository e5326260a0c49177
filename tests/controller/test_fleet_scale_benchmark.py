"""The fleet-scale benchmark's bookkeeping, on a small fleet (:mod:`benchmarks.fleet_scale`).

Its numbers are only worth reporting if the stages add up to the tick, the
statistics time comes from the kernels really running (in the tick and again
alone), and the rows it says a tick wrote are the rows the fleet's sensors
produce. Runs on SQLite and PostgreSQL (the ``db_url`` fixture).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks.fleet_scale import FEATURES, STAGES, measure_fleet

MODELS = 12


@pytest.mark.slow
def test_a_small_fleets_tick_is_accounted_for(tmp_path: Path, db_url: str) -> None:
    result = measure_fleet(MODELS, db_url, tmp_path, ticks=2, warmup=1)

    assert result["errors"] == [] and result["ticks"] == 2
    # the stages, timed through the tick's wrap argument, add up to the tick's wall time
    for tick in result["per_tick"]:
        assert set(STAGES) <= set(tick["stages_s"])
        accounted = sum(tick["stages_s"].values())
        assert accounted <= tick["tick_s"]
        assert tick["tick_s"] - accounted < 0.01 + 0.02 * tick["tick_s"]
    # the kernels ran: three sensors a model, inside the monitor stage, and again alone on the same arrays
    assert result["kernel_calls_per_tick"] == 3 * MODELS
    assert 0 < result["kernels_in_tick_median_s"] < result["stages_median_s"]["monitor"]
    assert result["statistics_alone_s"] > 0
    assert result["overhead_median_s"] == pytest.approx(result["tick_median_s"] - result["kernels_in_tick_median_s"],
                                                        abs=0.002)
    # every model writes the same rows each tick: at least a drift and a quality row per feature, one tick row
    observations = result["rows_written_per_tick"]["observation"]
    assert observations % MODELS == 0 and observations // MODELS >= 2 * len(FEATURES)
    assert result["rows_written_per_tick"]["tick"] == 1
    # a third of the fleet drifts (models 0, 3, 6, 9); a false alarm or two among the rest is allowed
    shifted = len(range(0, MODELS, 3))
    assert shifted <= result["models_drifting"] <= shifted + 2
    assert result["statements_per_tick"] > 0 and result["peak_rss_mib"] > 0
