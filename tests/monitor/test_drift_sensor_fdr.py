"""DriftSensor: Benjamini-Hochberg keeps false alarms near alpha, a real shift is found, small windows give no verdict."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from mape.config import DriftConfig, FeaturesConfig
from mape.errors import DataSourceError, InvalidParameterError, NotFittedError
from mape.monitor.sensors import DriftSensor

FEATURES = FeaturesConfig(numeric=[f"x{i}" for i in range(8)], categorical=["c0", "c1"])


def window(rng: np.random.Generator, n: int, *, shift: dict[str, float] | None = None) -> pd.DataFrame:
    shift = shift or {}
    data = {name: rng.normal(shift.get(name, 0.0), 1.0, size=n) for name in FEATURES.numeric}
    for name in FEATURES.categorical:
        data[name] = rng.choice(["a", "b", "c"], size=n, p=[0.5, 0.3, 0.2])
    return pd.DataFrame(data)


def test_false_alarms_on_ten_clean_features_stay_near_alpha():
    rng = np.random.default_rng(20260105)
    repetitions, alarms, uncorrected = 200, 0, 0
    for _ in range(repetitions):
        sensor = DriftSensor(FEATURES, alpha=0.05, min_samples=100).fit(window(rng, 400))
        report = sensor.score(window(rng, 300))
        alarms += report.detected
        uncorrected += any(f.p_value < 0.05 for f in report.features)
    # BH under the global null: P(any alarm) <= alpha (mean 10 of 200, sd 3.1).
    assert 2 <= alarms <= 18
    # Without the correction about 1 - 0.95**10 = 40% of checks would alarm.
    assert uncorrected >= 60


def test_a_half_sigma_shift_in_one_feature_is_found_at_n_2000():
    rng = np.random.default_rng(7)
    sensor = DriftSensor.from_config(FEATURES, DriftConfig(alpha=0.05, min_samples=100)).fit(window(rng, 2000))

    report = sensor.score(window(rng, 2000, shift={"x3": 0.5}))

    assert report.detected is True
    assert [f.feature for f in report.features if f.drifted] == ["x3"]
    assert (report.n_drifted, report.n_features) == (1, 10)
    assert report.share_drifted == pytest.approx(0.1)
    assert report.min_q_value == min(f.q_value for f in report.features) < 1e-20
    assert {f.feature: f.test for f in report.features}["c1"] == "chi2"
    assert {f.feature: f.test for f in report.features}["x3"] == "ks"
    assert (report.n_reference, report.n_current) == (2000, 2000)


def test_too_few_rows_in_either_window_give_no_verdict():
    rng = np.random.default_rng(1)
    sensor = DriftSensor(FEATURES, min_samples=100).fit(window(rng, 500))

    report = sensor.score(window(rng, 99, shift={"x0": 5.0}))

    assert report.detected is None and report.share_drifted is None and report.n_drifted is None
    assert report.features == ()
    assert (report.n_reference, report.n_current) == (500, 99)
    assert "insufficient data" in report.reason

    small_reference = DriftSensor(FEATURES, min_samples=100).fit(window(rng, 50))
    assert small_reference.score(window(rng, 500)).detected is None


def test_a_feature_missing_from_the_current_window_is_not_tested():
    rng = np.random.default_rng(2)
    sensor = DriftSensor(FEATURES).fit(window(rng, 300))
    current = window(rng, 300)
    current["x5"] = np.nan

    report = sensor.score(current)

    assert report.n_features == 9
    assert "x5" not in {f.feature for f in report.features}


def test_a_missing_column_is_a_data_source_error():
    rng = np.random.default_rng(3)
    sensor = DriftSensor(FEATURES).fit(window(rng, 300))

    with pytest.raises(DataSourceError, match="The current window has no feature column 'c1'"):
        sensor.score(window(rng, 300).drop(columns="c1"))


def test_score_before_fit_and_bad_parameters_are_refused():
    with pytest.raises(NotFittedError):
        DriftSensor(FEATURES).score(pd.DataFrame())
    with pytest.raises(InvalidParameterError, match=r"^The 'alpha' parameter of DriftSensor must be a float in \(0, 1\)\. Got 2 instead\.$"):
        DriftSensor(FEATURES, alpha=2)
