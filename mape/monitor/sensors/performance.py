"""Model quality on the predictions whose ground truth has arrived.

Who calls it: the Monitor stage, every tick, on the labelled window of a model
(:func:`mape.data.labelled_window`); the report becomes the ``performance.*``
observations.

Classification: accuracy, precision, recall and F1 (of class 1 when the
classes are exactly 0 and 1, else macro-averaged over the classes seen in
labels or predictions) and, when the production version recorded a baseline
accuracy, the drop from it. With a score column (the predicted probability of
class 1 of a binary classifier), also ROC AUC and log loss on the labelled
rows, and a **label-free estimate** of accuracy over every prediction of the
window, labelled or not: confidence-based performance estimation (CBPE, as in
NannyML): a calibrated probability ``p`` of class 1 is right with probability
``max(p, 1 - p)``, so the expected accuracy is their mean. It is marked as an
estimate (its own metric names, ``estimated_accuracy`` and
``estimated_accuracy_drop``) and is only as good as the model's calibration;
it is what the loop has while labels are late. Regression: mean absolute
error and root mean squared error.

Every report carries its counts (``n_labelled``, ``n_estimated``): below
``min_samples`` rows a metric is not reported at all, so a window of five
labels never reads as "accuracy 0.4".
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Literal, Self

import numpy as np
import pandas as pd

from sklearn import metrics as skm

from mape.config import ModelConfig
from mape.monitor.detectors._params import Constraint, Interval, Options, validate_params

Task = Literal["classification", "regression"]


@dataclass(frozen=True)
class PerformanceReport:
    """Metrics of one labelled window; every metric is ``None`` below ``min_samples`` labelled rows.

    Attributes
    ----------
    task : {"classification", "regression"}
    n_labelled : int
        Labelled predictions scored (after the version filter, without missing values).
    accuracy, precision, recall, f1, accuracy_drop : float or None
        Classification metrics; ``accuracy_drop`` is ``baseline - accuracy``.
    roc_auc, log_loss : float or None
        With a score column, on the labelled rows (ROC AUC only when both classes occur).
    mae, rmse : float or None
        Regression metrics.
    estimated_accuracy, estimated_accuracy_drop : float or None
        The label-free estimate (CBPE) over every scored prediction of the window, and its drop from the baseline.
    n_estimated : int
        Predictions the estimate is over (0 without a score column).
    reason : str or None
        Why there are no metric values from labels.
    """

    task: Task
    n_labelled: int
    accuracy: float | None = None
    precision: float | None = None
    recall: float | None = None
    f1: float | None = None
    accuracy_drop: float | None = None
    roc_auc: float | None = None
    log_loss: float | None = None
    mae: float | None = None
    rmse: float | None = None
    estimated_accuracy: float | None = None
    estimated_accuracy_drop: float | None = None
    n_estimated: int = 0
    reason: str | None = None

    def __str__(self) -> str:
        estimate = ("" if self.estimated_accuracy is None
                    else f"; estimated accuracy {self.estimated_accuracy:.3f} on {self.n_estimated} predictions")
        if self.reason is not None:
            return f"no performance metrics ({self.reason}){estimate}"
        if self.task == "regression":
            return f"mae {self.mae:.4g}, rmse {self.rmse:.4g} on {self.n_labelled} labelled"
        drop = "" if self.accuracy_drop is None else f" (drop {self.accuracy_drop:+.3f})"
        return f"accuracy {self.accuracy:.3f}{drop}, f1 {self.f1:.3f} on {self.n_labelled} labelled{estimate}"


class PerformanceSensor:
    """Scores a labelled window of predictions.

    Parameters
    ----------
    task : {"classification", "regression"}
    prediction_column, label_column : str
        Columns of the labelled window.
    min_samples : int, default 100
        Fewer labelled rows than this: no metric values.
    version_column : str, optional
        Column naming the serving version; with a ``version`` given to
        :meth:`score`, only rows of that version are scored.
    score_column : str, optional
        Column with the predicted probability of class 1 (binary classifiers):
        enables ROC AUC, log loss and the label-free estimate.

    Examples
    --------
    >>> window = pd.DataFrame({"prediction": [1, 0, 1, 1], "label": [1, 0, 0, 1]})
    >>> sensor = PerformanceSensor(task="classification", prediction_column="prediction",
    ...                            label_column="label", min_samples=4)
    >>> print(sensor.score(window, baseline_accuracy=0.9))
    accuracy 0.750 (drop +0.150), f1 0.800 on 4 labelled

    With scores, the estimate covers predictions whose labels have not arrived:

    >>> scored = PerformanceSensor(task="classification", prediction_column="prediction", label_column="label",
    ...                            min_samples=2, score_column="p")
    >>> log = pd.DataFrame({"prediction": [1, 0, 1, 0], "p": [0.9, 0.2, 0.6, 0.1]})
    >>> report = scored.score(window.assign(p=[0.9, 0.2, 0.85, 0.8]), predictions=log)
    >>> report.n_estimated, round(report.estimated_accuracy, 3), round(report.roc_auc, 3)
    (4, 0.8, 0.75)
    """

    _parameter_constraints: ClassVar[dict[str, Constraint]] = {
        "task": Options(("classification", "regression")),
        "min_samples": Interval(int, 1, None, closed="left"),
    }

    def __init__(self, *, task: Task, prediction_column: str, label_column: str, min_samples: int = 100,
                 version_column: str | None = None, score_column: str | None = None) -> None:
        self.task = task
        self.prediction_column = prediction_column
        self.label_column = label_column
        self.min_samples = min_samples
        self.version_column = version_column
        self.score_column = score_column
        validate_params(type(self).__name__, self._parameter_constraints, {"task": task, "min_samples": min_samples})

    @classmethod
    def from_config(cls, model: ModelConfig) -> Self:
        """The sensor a managed model's settings describe."""
        return cls(task=model.task, prediction_column=model.prediction_column, label_column=model.label_column,
                   min_samples=model.performance.min_samples, version_column=model.version_column,
                   score_column=model.score_column)

    def score(self, window: pd.DataFrame, *, version: int | None = None, baseline_accuracy: float | None = None,
              predictions: pd.DataFrame | None = None) -> PerformanceReport:
        """Metrics of the window's labelled predictions (of ``version`` only, when given and the window has a version column).

        ``predictions``: every prediction of the window, labelled or not
        (with the score column), for the label-free estimate; without it the
        estimate covers the labelled rows only.
        """
        window = self._of_version(window, version)
        window = window[window[self.prediction_column].notna() & window[self.label_column].notna()]
        estimate = self._estimate(self._of_version(predictions, version) if predictions is not None else window,
                                  baseline_accuracy)
        n = len(window)
        if n < self.min_samples:
            return PerformanceReport(task=self.task, n_labelled=n, **estimate,
                                     reason=f"insufficient data: {n} labelled rows, at least {self.min_samples} needed")
        predicted, actual = window[self.prediction_column], window[self.label_column]
        if self.task == "regression":
            error = predicted.to_numpy(dtype=float) - actual.to_numpy(dtype=float)
            return PerformanceReport(task=self.task, n_labelled=n, mae=float(np.mean(np.abs(error))),
                                     rmse=float(np.sqrt(np.mean(error**2))))
        predicted, actual = _comparable(predicted), _comparable(actual)
        accuracy = float(np.mean(predicted == actual))
        drop = None if baseline_accuracy is None else float(baseline_accuracy) - accuracy
        precision, recall = precision_recall(actual, predicted)
        roc_auc = log_loss = None
        if self.score_column is not None and self.score_column in window.columns and _binary(actual):
            scores = pd.to_numeric(window[self.score_column], errors="coerce").to_numpy(dtype=float)
            known = np.isfinite(scores)
            y, p = actual[known].astype(int), np.clip(scores[known], 0.0, 1.0)
            if y.size >= self.min_samples:
                if np.unique(y).size == 2:
                    roc_auc = float(skm.roc_auc_score(y, p))
                log_loss = float(skm.log_loss(y, np.clip(p, 1e-15, 1 - 1e-15), labels=[0, 1]))
        return PerformanceReport(task=self.task, n_labelled=n, accuracy=accuracy, precision=precision, recall=recall,
                                 f1=f1(actual, predicted), accuracy_drop=drop, roc_auc=roc_auc, log_loss=log_loss,
                                 **estimate)

    def _of_version(self, frame: pd.DataFrame, version: int | None) -> pd.DataFrame:
        if version is not None and self.version_column is not None and self.version_column in frame.columns:
            return frame[(version_numbers(frame[self.version_column]) == version).to_numpy()]
        return frame

    def _estimate(self, predictions: pd.DataFrame, baseline_accuracy: float | None) -> dict[str, Any]:
        """CBPE: the expected accuracy of calibrated class-1 probabilities, ``mean(max(p, 1 - p))``."""
        if self.task != "classification" or self.score_column is None or self.score_column not in predictions.columns:
            return {}
        scores = pd.to_numeric(predictions[self.score_column], errors="coerce").to_numpy(dtype=float)
        scores = np.clip(scores[np.isfinite(scores)], 0.0, 1.0)
        if scores.size < self.min_samples:
            return {"n_estimated": int(scores.size)}
        estimated = float(np.mean(np.maximum(scores, 1.0 - scores)))
        drop = None if baseline_accuracy is None else float(baseline_accuracy) - estimated
        return {"n_estimated": int(scores.size), "estimated_accuracy": estimated, "estimated_accuracy_drop": drop}


def precision_recall(actual: np.ndarray, predicted: np.ndarray) -> tuple[float, float]:
    """Precision and recall of class 1 when the classes are exactly {0, 1}; else macro averages over the classes seen.

    A class never predicted has precision 0, and one never present recall 0
    (scikit-learn's ``zero_division=0``); counted with numpy, not scikit-learn,
    whose argument checks cost more than the counting on a fleet.

    >>> precision_recall(np.array([1, 0, 1, 1]), np.array([1, 1, 1, 0]))
    (0.6666666666666666, 0.6666666666666666)
    """
    classes = [1] if _binary(actual, predicted) else np.union1d(actual, predicted)
    precisions, recalls = [], []
    for cls in classes:
        hit_predicted, hit_actual = predicted == cls, actual == cls
        true_positive = float(np.count_nonzero(hit_predicted & hit_actual))
        n_predicted, n_actual = np.count_nonzero(hit_predicted), np.count_nonzero(hit_actual)
        precisions.append(true_positive / n_predicted if n_predicted else 0.0)
        recalls.append(true_positive / n_actual if n_actual else 0.0)
    return float(np.mean(precisions)), float(np.mean(recalls))


def _binary(actual: np.ndarray, predicted: np.ndarray | None = None) -> bool:
    """Whether the labels (and predictions) are numeric and within {0, 1}."""
    values = actual if predicted is None else np.concatenate([actual, predicted])
    return values.dtype.kind in "biuf" and set(np.unique(values).tolist()) <= {0, 1}


def f1(actual: np.ndarray, predicted: np.ndarray) -> float:
    """F1 of class 1 when the classes are exactly {0, 1}; else the macro average over the classes seen.

    >>> f1(np.array([1, 0, 1, 1]), np.array([1, 1, 1, 0]))
    0.6666666666666666
    >>> f1(np.array(["a", "b", "c"]), np.array(["a", "b", "b"]))
    0.5555555555555555
    """
    classes = np.union1d(actual, predicted)
    binary = actual.dtype.kind in "biuf" and classes.size == 2 and set(classes.tolist()) == {0, 1}
    scores = []
    for cls in ([1] if binary else classes):
        true_positive = np.sum((predicted == cls) & (actual == cls))
        wrong = np.sum((predicted == cls) != (actual == cls))
        scores.append(2 * true_positive / (2 * true_positive + wrong))
    return float(np.mean(scores))


def _comparable(values: pd.Series) -> np.ndarray:
    """Class labels as floats when numeric (1 == 1.0 == True), else as text."""
    if pd.api.types.is_numeric_dtype(values.dtype) or pd.api.types.is_bool_dtype(values.dtype):
        return values.to_numpy(dtype=float)
    return values.astype(str).to_numpy(dtype=object)


def version_numbers(values: pd.Series) -> pd.Series:
    """Version numbers from a version column: ``3``, ``"3"`` and ``"v3"`` are all 3; anything else is NaN.

    >>> version_numbers(pd.Series(["v3", "3", "x", None])).tolist()
    [3.0, 3.0, nan, nan]
    """
    if pd.api.types.is_numeric_dtype(values.dtype):
        return pd.to_numeric(values, errors="coerce")
    text = values.astype("string").str.strip().str.removeprefix("v").str.removeprefix("V")
    return pd.to_numeric(text, errors="coerce").astype(float)
