"""The effect floor: large windows do not flag negligible shifts, real shifts still drift, false alarms stay rare."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from mape.config import DriftConfig, FeaturesConfig
from mape.errors import InvalidParameterError
from mape.monitor.sensors import DriftSensor
from mape.monitor.sensors.drift import DEFAULT_EFFECT_FLOORS

FIFTY = FeaturesConfig(numeric=[f"x{i:02d}" for i in range(50)])


def numeric_window(rng: np.random.Generator, n: int, features: FeaturesConfig = FIFTY,
                   shift: dict[str, float] | None = None) -> pd.DataFrame:
    shift = shift or {}
    values = rng.normal(size=(n, len(features.numeric)))
    for j, name in enumerate(features.numeric):
        values[:, j] += shift.get(name, 0.0)
    return pd.DataFrame(values, columns=features.numeric)


def test_the_defaults_of_sensor_and_configuration_agree():
    assert DriftConfig().effect_floors == DEFAULT_EFFECT_FLOORS == {"wasserstein": 0.1, "psi": 0.1, "js": 0.05}
    assert DriftConfig(effect_floors={"psi": 0.25}).effect_floors == {"wasserstein": 0.1, "psi": 0.25, "js": 0.05}
    sensor = DriftSensor.from_config(FIFTY, DriftConfig(numeric_test="cvm", effect_floors={"js": 0.2}))
    assert sensor.numeric_test == "cvm"
    assert sensor.effect_floors == {"wasserstein": 0.1, "psi": 0.1, "js": 0.2}


def test_a_two_hundredth_sigma_shift_on_a_million_rows_is_significant_but_not_drift():
    rng = np.random.default_rng(2026)
    one = FeaturesConfig(numeric=["x"])
    sensor = DriftSensor(one).fit(numeric_window(rng, 1_000_000, one))

    report = sensor.score(numeric_window(rng, 1_000_000, one, shift={"x": 0.02}))

    (feature,) = report.features
    assert feature.significant and feature.q_value < 1e-10  # KS alone would call this drift
    assert feature.effect_name == "wasserstein" and 0.01 < feature.effect_size < 0.03
    assert not feature.drifted and report.detected is False and report.share_drifted == 0.0
    assert report.max_effect_size == feature.effect_size
    # with the floor off, the test's verdict stands
    unfloored = DriftSensor(one, effect_floors={"wasserstein": 0.0}).fit(numeric_window(rng, 1_000_000, one))
    assert unfloored.score(numeric_window(rng, 1_000_000, one, shift={"x": 0.02})).detected is True


@pytest.mark.parametrize("numeric_test", ["ks", "cvm"])
def test_a_significant_feature_below_its_floor_is_not_drifted(numeric_test):
    rng = np.random.default_rng(3)
    two = FeaturesConfig(numeric=["small", "large"])
    sensor = DriftSensor(two, numeric_test=numeric_test).fit(numeric_window(rng, 200_000, two))

    report = sensor.score(numeric_window(rng, 200_000, two, shift={"small": 0.03, "large": 0.3}))

    by_name = {f.feature: f for f in report.features}
    assert by_name["small"].significant and not by_name["small"].drifted
    assert by_name["large"].significant and by_name["large"].drifted
    assert by_name["large"].effect_size == pytest.approx(0.3, abs=0.02)
    assert (report.n_drifted, report.detected, by_name["large"].test) == (1, True, numeric_test)
    assert "max effect 0.3" in str(report)


def test_categorical_features_use_the_jensen_shannon_floor():
    rng = np.random.default_rng(4)
    colours = FeaturesConfig(categorical=["slight", "strong"])

    def window(n: int, p_slight: float, p_strong: float) -> pd.DataFrame:
        return pd.DataFrame({"slight": rng.choice(["a", "b"], size=n, p=[p_slight, 1 - p_slight]),
                             "strong": rng.choice(["a", "b"], size=n, p=[p_strong, 1 - p_strong])})

    report = DriftSensor(colours).fit(window(300_000, 0.5, 0.5)).score(window(300_000, 0.49, 0.40))

    slight, strong = report.features
    assert slight.effect_name == strong.effect_name == "js"
    assert slight.significant and not slight.drifted  # 50% -> 49%: JS distance about 0.007
    assert strong.drifted and strong.effect_size > 0.05  # 50% -> 40%: about 0.085


def test_a_feature_cvm_cannot_test_gives_no_verdict_despite_its_effect_size():
    # CvM needs two values per sample: the effect size exists, the p-value does not, so nothing is decided
    one = FeaturesConfig(numeric=["x"])
    sensor = DriftSensor(one, numeric_test="cvm", min_samples=2).fit(pd.DataFrame({"x": [0.0, 1.0, 2.0]}))
    report = sensor.score(pd.DataFrame({"x": [5.0, math.nan]}))
    assert report.features == () and report.detected is None


def test_bad_floors_and_tests_are_refused():
    with pytest.raises(InvalidParameterError, match=r"^The 'effect_floors' parameter of DriftSensor must be a mapping"):
        DriftSensor(FIFTY, effect_floors={"cohen_d": 0.2})
    with pytest.raises(InvalidParameterError, match="effect_floors"):
        DriftSensor(FIFTY, effect_floors={"psi": -0.1})
    with pytest.raises(InvalidParameterError, match=r"The 'numeric_test' parameter of DriftSensor must be a str among"):
        DriftSensor(FIFTY, numeric_test="anderson")


@pytest.mark.slow
def test_fifty_clean_features_raise_an_alarm_in_at_most_about_five_percent_of_checks():
    rng = np.random.default_rng(20260601)
    repetitions, alarms, significant = 200, 0, 0
    for _ in range(repetitions):
        report = DriftSensor(FIFTY).fit(numeric_window(rng, 2000)).score(numeric_window(rng, 2000))
        alarms += bool(report.detected)
        significant += any(f.significant for f in report.features)
    # BH at 0.05 under the global null: P(any significant) <= 0.05, so at most about 10 of 200 (sd 3.1);
    # the floor can only remove alarms. Without a correction about 92% of checks would alarm.
    assert significant <= 18
    assert alarms <= significant


@pytest.mark.slow
def test_a_half_sigma_shift_in_one_of_fifty_features_is_found_in_95_percent_of_checks():
    rng = np.random.default_rng(20260602)
    repetitions, found, wrong = 100, 0, 0
    for _ in range(repetitions):
        report = DriftSensor(FIFTY).fit(numeric_window(rng, 5000)).score(numeric_window(rng, 5000, shift={"x17": 0.5}))
        drifted = {f.feature for f in report.features if f.drifted}
        found += "x17" in drifted
        wrong += bool(drifted - {"x17"})
    assert found >= 95
    assert wrong <= 10
