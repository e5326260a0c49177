"""PerformanceSensor scores labelled predictions like scikit-learn, per production version, above min_samples."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import accuracy_score, f1_score, mean_absolute_error, mean_squared_error

from mape.errors import InvalidParameterError
from mape.monitor.sensors import PerformanceSensor


def sensor(task: str = "classification", min_samples: int = 10) -> PerformanceSensor:
    return PerformanceSensor(task=task, prediction_column="prediction", label_column="label",
                             min_samples=min_samples, version_column="model_version")


def test_binary_classification_matches_sklearn_and_reports_the_drop_from_baseline():
    rng = np.random.default_rng(0)
    label = rng.integers(0, 2, size=500)
    prediction = np.where(rng.uniform(size=500) < 0.8, label, 1 - label)
    window = pd.DataFrame({"prediction": prediction, "label": label})

    report = sensor().score(window, baseline_accuracy=0.9)

    assert report.n_labelled == 500
    assert report.accuracy == pytest.approx(accuracy_score(label, prediction))
    assert report.f1 == pytest.approx(f1_score(label, prediction))
    assert report.accuracy_drop == pytest.approx(0.9 - report.accuracy)
    assert report.mae is None and report.rmse is None


def test_multiclass_f1_is_macro_averaged():
    rng = np.random.default_rng(1)
    label = rng.choice(["cat", "dog", "fish"], size=300)
    prediction = np.where(rng.uniform(size=300) < 0.6, label, rng.choice(["cat", "dog", "fish", "bird"], size=300))
    report = sensor().score(pd.DataFrame({"prediction": prediction, "label": label}))

    assert report.f1 == pytest.approx(f1_score(label, prediction, average="macro"))
    assert report.accuracy_drop is None  # no baseline


def test_regression_reports_mae_and_rmse():
    rng = np.random.default_rng(2)
    label = rng.normal(size=200)
    prediction = label + rng.normal(0.0, 0.3, size=200)

    report = sensor("regression").score(pd.DataFrame({"prediction": prediction, "label": label}))

    assert report.mae == pytest.approx(mean_absolute_error(label, prediction))
    assert report.rmse == pytest.approx(np.sqrt(mean_squared_error(label, prediction)))
    assert report.accuracy is None and report.f1 is None


def test_below_min_samples_only_the_count_is_reported():
    window = pd.DataFrame({"prediction": [1] * 9 + [None], "label": [0] * 10})

    report = sensor(min_samples=10).score(window, baseline_accuracy=0.9)

    assert report.n_labelled == 9  # the missing prediction does not count
    assert (report.accuracy, report.f1, report.accuracy_drop) == (None, None, None)
    assert "insufficient data" in report.reason


def test_only_rows_served_by_the_production_version_are_scored():
    window = pd.DataFrame({
        "prediction": [1] * 10 + [0] * 10 + [1] * 5,
        "label": [1] * 25,
        "model_version": ["v1"] * 10 + ["v2"] * 10 + ["2"] * 5,
    })

    assert sensor(min_samples=5).score(window, version=1).accuracy == 1.0
    v2 = sensor(min_samples=5).score(window, version=2)
    assert (v2.n_labelled, v2.accuracy) == (15, pytest.approx(5 / 15))
    assert sensor(min_samples=5).score(window).n_labelled == 25  # no version known: every row


def test_bad_task_is_refused():
    with pytest.raises(InvalidParameterError, match="The 'task' parameter of PerformanceSensor must be a str among"):
        PerformanceSensor(task="ranking", prediction_column="p", label_column="l")
