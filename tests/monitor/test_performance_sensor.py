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


def test_precision_recall_auc_and_log_loss_match_sklearn_with_a_score_column():
    from sklearn.metrics import log_loss, precision_score, recall_score, roc_auc_score

    rng = np.random.default_rng(4)
    label = rng.integers(0, 2, size=800)
    score = np.clip(0.5 + (label - 0.5) * 0.6 + rng.normal(0, 0.25, size=800), 0, 1)
    window = pd.DataFrame({"prediction": (score > 0.5).astype(int), "label": label, "p": score})

    report = PerformanceSensor(task="classification", prediction_column="prediction", label_column="label",
                               min_samples=10, score_column="p").score(window)

    assert report.precision == pytest.approx(precision_score(label, window["prediction"]))
    assert report.recall == pytest.approx(recall_score(label, window["prediction"]))
    assert report.roc_auc == pytest.approx(roc_auc_score(label, score))
    assert report.log_loss == pytest.approx(log_loss(label, np.clip(score, 1e-15, 1 - 1e-15)))


def test_the_label_free_estimate_tracks_the_true_accuracy_of_a_calibrated_model_before_labels_arrive():
    rng = np.random.default_rng(5)
    n = 20_000
    p = rng.beta(2, 2, size=n)  # calibrated by construction: the label is drawn with probability p
    label = (rng.uniform(size=n) < p).astype(int)
    log = pd.DataFrame({"prediction": (p > 0.5).astype(int), "p": p})
    labelled = log.assign(label=label).head(50)  # only 50 labels have arrived: below min_samples

    report = PerformanceSensor(task="classification", prediction_column="prediction", label_column="label",
                               min_samples=100, score_column="p").score(labelled, predictions=log,
                                                                         baseline_accuracy=0.8)

    assert report.accuracy is None and report.reason is not None and report.n_labelled == 50
    true_accuracy = float(np.mean(log["prediction"] == label))
    assert report.n_estimated == n
    assert report.estimated_accuracy == pytest.approx(true_accuracy, abs=0.01)
    assert report.estimated_accuracy_drop == pytest.approx(0.8 - report.estimated_accuracy)
    assert "estimated accuracy" in str(report)


def test_an_overconfident_model_overestimates_which_is_why_the_estimate_has_its_own_name():
    rng = np.random.default_rng(6)
    p = rng.beta(2, 2, size=10_000)
    label = (rng.uniform(size=10_000) < p).astype(int)
    overconfident = np.where(p > 0.5, 0.99, 0.01)  # same decisions, probabilities pushed to the extremes
    log = pd.DataFrame({"prediction": (p > 0.5).astype(int), "p": overconfident, "label": label})

    report = PerformanceSensor(task="classification", prediction_column="prediction", label_column="label",
                               min_samples=100, score_column="p").score(log)

    assert report.estimated_accuracy > report.accuracy + 0.2  # the estimate is only as good as the calibration


def test_no_score_column_means_no_estimate_and_no_auc():
    window = pd.DataFrame({"prediction": [1, 0] * 60, "label": [1, 1] * 60})
    report = sensor().score(window)
    assert (report.roc_auc, report.log_loss, report.estimated_accuracy, report.n_estimated) == (None, None, None, 0)
