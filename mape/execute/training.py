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
from typing import Any

import pandas as pd

from mape._util.imports import import_object
from mape.data.artifacts import ARTIFACT_FILE, load_artifact, save_artifact  # noqa: F401 - re-exported
from mape.errors import PermanentActionError



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


