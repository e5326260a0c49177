"""Calling a managed model's training entrypoint, and storing and loading what it returns.

Who calls it: the ``retrain`` effector. The entrypoint named in configuration
(``training.entrypoint: package.module:function``) receives a
:class:`TrainingRequest` — the labelled data of the requested window, already
read from the model's sources, plus the window bounds and parameters — and
returns a fitted estimator with ``predict`` (scikit-learn style), or a
:class:`TrainedModel` carrying the estimator and its own metrics. The engine
persists the estimator with joblib under ``artifacts_dir/<model>/run-<id>/``
and records that directory as the version's artifact URI.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import joblib
import pandas as pd

from mape._util.imports import import_object
from mape.errors import PermanentActionError

ARTIFACT_FILE = "model.joblib"


@dataclass(frozen=True)
class TrainingRequest:
    """Everything a training entrypoint gets.

    Attributes
    ----------
    model_name : str
        The managed model's name.
    data : pandas.DataFrame
        Labelled rows of the window: feature columns, ``label`` and ``timestamp``.
    features : list of str
        The feature columns, numeric first, then categorical.
    numeric, categorical : list of str
        The feature columns by kind.
    window_start, window_end : datetime
        The training window (prediction time of the rows).
    params : dict
        ``training.params`` from configuration merged with the decision's parameters.
    """

    model_name: str
    data: pd.DataFrame
    features: list[str]
    numeric: list[str]
    categorical: list[str]
    window_start: datetime
    window_end: datetime
    params: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class TrainedModel:
    """What an entrypoint may return instead of a bare estimator."""

    estimator: Any
    metrics: dict[str, float] = field(default_factory=dict)


def run_entrypoint(entrypoint: str, request: TrainingRequest) -> TrainedModel:
    """Import and call the entrypoint; reject results that cannot predict."""
    try:
        fn = import_object(entrypoint)
    except ValueError as exc:
        raise PermanentActionError(f"training entrypoint of model {request.model_name}: {exc}") from None
    result = fn(request)
    trained = result if isinstance(result, TrainedModel) else TrainedModel(estimator=result)
    if not hasattr(trained.estimator, "predict"):
        raise PermanentActionError(
            f"training entrypoint {entrypoint} returned {type(trained.estimator).__name__}, which has no predict()"
        )
    return trained


def save_artifact(estimator: Any, directory: Path) -> str:
    directory.mkdir(parents=True, exist_ok=True)
    joblib.dump(estimator, directory / ARTIFACT_FILE)
    return directory.resolve().as_uri()


def load_artifact(uri: str) -> Any:
    """Load the estimator stored at a ``file://`` directory URI (or a plain path)."""
    path = Path(uri[len("file://"):]) if uri.startswith("file://") else Path(uri)
    file = path / ARTIFACT_FILE if path.is_dir() or not path.suffix else path
    try:
        return joblib.load(file)
    except FileNotFoundError:
        raise PermanentActionError(f"model artifact not found at {file}") from None
