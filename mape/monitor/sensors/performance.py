"""Model quality on the predictions whose ground truth has arrived.

Who calls it: the Monitor stage, every tick, on the labelled window of a model
(:func:`mape.data.labelled_window`); the report becomes the ``performance.*``
observations.

Classification: accuracy and F1 (of class 1 when the classes are exactly 0
and 1, else macro-averaged over the classes seen in labels or predictions) and,
when the production version recorded a baseline accuracy, the drop from it.
Regression: mean absolute error and root mean squared error.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal, Self

import numpy as np
import pandas as pd

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
    accuracy, f1, accuracy_drop : float or None
        Classification metrics; ``accuracy_drop`` is ``baseline - accuracy``.
    mae, rmse : float or None
        Regression metrics.
    reason : str or None
        Why there are no metric values.
    """

    task: Task
    n_labelled: int
    accuracy: float | None = None
    f1: float | None = None
    accuracy_drop: float | None = None
    mae: float | None = None
    rmse: float | None = None
    reason: str | None = None

    def __str__(self) -> str:
        if self.reason is not None:
            return f"no performance metrics ({self.reason})"
        if self.task == "regression":
            return f"mae {self.mae:.4g}, rmse {self.rmse:.4g} on {self.n_labelled} labelled"
        drop = "" if self.accuracy_drop is None else f" (drop {self.accuracy_drop:+.3f})"
        return f"accuracy {self.accuracy:.3f}{drop}, f1 {self.f1:.3f} on {self.n_labelled} labelled"


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

    Examples
    --------
    >>> window = pd.DataFrame({"prediction": [1, 0, 1, 1], "label": [1, 0, 0, 1]})
    >>> sensor = PerformanceSensor(task="classification", prediction_column="prediction",
    ...                            label_column="label", min_samples=4)
    >>> print(sensor.score(window, baseline_accuracy=0.9))
    accuracy 0.750 (drop +0.150), f1 0.800 on 4 labelled
    """

    _parameter_constraints: ClassVar[dict[str, Constraint]] = {
        "task": Options(("classification", "regression")),
        "min_samples": Interval(int, 1, None, closed="left"),
    }

    def __init__(self, *, task: Task, prediction_column: str, label_column: str, min_samples: int = 100,
                 version_column: str | None = None) -> None:
        self.task = task
        self.prediction_column = prediction_column
        self.label_column = label_column
        self.min_samples = min_samples
        self.version_column = version_column
        validate_params(type(self).__name__, self._parameter_constraints, {"task": task, "min_samples": min_samples})

    @classmethod
    def from_config(cls, model: ModelConfig) -> Self:
        """The sensor a managed model's settings describe."""
        return cls(task=model.task, prediction_column=model.prediction_column, label_column=model.label_column,
                   min_samples=model.performance.min_samples, version_column=model.version_column)

    def score(self, window: pd.DataFrame, *, version: int | None = None,
              baseline_accuracy: float | None = None) -> PerformanceReport:
        """Metrics of the window's labelled predictions (of ``version`` only, when given and the window has a version column)."""
        if version is not None and self.version_column is not None and self.version_column in window.columns:
            window = window[(version_numbers(window[self.version_column]) == version).to_numpy()]
        window = window[window[self.prediction_column].notna() & window[self.label_column].notna()]
        n = len(window)
        if n < self.min_samples:
            return PerformanceReport(task=self.task, n_labelled=n,
                                     reason=f"insufficient data: {n} labelled rows, at least {self.min_samples} needed")
        predicted, actual = window[self.prediction_column], window[self.label_column]
        if self.task == "regression":
            error = predicted.to_numpy(dtype=float) - actual.to_numpy(dtype=float)
            return PerformanceReport(task=self.task, n_labelled=n, mae=float(np.mean(np.abs(error))),
                                     rmse=float(np.sqrt(np.mean(error**2))))
        predicted, actual = _comparable(predicted), _comparable(actual)
        accuracy = float(np.mean(predicted == actual))
        drop = None if baseline_accuracy is None else float(baseline_accuracy) - accuracy
        return PerformanceReport(task=self.task, n_labelled=n, accuracy=accuracy, f1=f1(actual, predicted),
                                 accuracy_drop=drop)


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
