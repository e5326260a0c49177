"""With a score column, the Monitor writes ROC AUC, log loss and a label-free accuracy estimate over every prediction."""

from __future__ import annotations

from datetime import timedelta

import numpy as np
import pytest

from knowledge.database import session_scope
from mape.monitor import Monitor
from tests.monitor.test_monitor_stage_observations import (
    LABEL_DELAY, T0, inference_log, model_config, register, rows_at,
)


def test_the_estimate_covers_predictions_whose_labels_have_not_arrived(engine, tmp_path):
    log = inference_log(T0, T0 + timedelta(hours=12))
    rng = np.random.default_rng(9)
    log["p"] = rng.beta(2, 2, size=len(log))  # calibrated: label ~ Bernoulli(p), prediction = p > 0.5
    log["label"] = (rng.uniform(size=len(log)) < log["p"]).astype(int)
    log["prediction"] = (log["p"] > 0.5).astype(int)
    (tmp_path / "log").mkdir()
    log.drop(columns="label").to_parquet(tmp_path / "log" / "part-0.parquet")
    # labels arrive late: those of the last 90 minutes before the tick have not arrived
    log[["id", "timestamp", "label"]].assign(timestamp=log["timestamp"] + 3 * LABEL_DELAY).to_csv(
        tmp_path / "labels.csv", index=False)
    config = model_config("churn", str(tmp_path / "log"), str(tmp_path / "labels.csv")).model_copy(
        update={"score_column": "p"})
    at = T0 + timedelta(hours=10)
    with session_scope(engine) as session:
        model_id = register(session, "churn", accuracy=0.9)
        report = Monitor([config]).run(session, {"churn": model_id}, at)
    with session_scope(engine) as session:
        got = {o.metric: o.value for o in rows_at(session, at, model_id) if o.sensor == "performance"}

    window = log[(log.timestamp >= at - timedelta(hours=2)) & (log.timestamp < at)]
    assert got["performance.n_estimated"] == len(window) == 360  # every prediction of the 2 h window
    assert got["performance.n_labelled"] == 91  # only 8:00 to 8:30 inclusive are labelled by `at`
    true_accuracy = float((window.prediction == window.label).mean())
    assert got["performance.estimated_accuracy"] == pytest.approx(true_accuracy, abs=0.05)
    assert got["performance.estimated_accuracy_drop"] == pytest.approx(0.9 - got["performance.estimated_accuracy"])
    assert 0.5 < got["performance.roc_auc"] <= 1.0 and got["performance.log_loss"] > 0
    assert report.errors == ()
