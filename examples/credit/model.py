"""The credit model's training entrypoint: ``examples.credit.model:train``.

mape calls it with a :class:`~mape.execute.training.TrainingRequest` holding
the labelled rows of the requested window; it returns a fitted scikit-learn
pipeline (scaling, one-hot encoding, logistic regression) and its training
accuracy. This is all a team writes to let mape retrain its model.
"""

from __future__ import annotations

from sklearn.compose import ColumnTransformer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from mape.execute.training import TrainedModel, TrainingRequest


def build_pipeline(numeric: list[str], categorical: list[str], *, c: float = 1.0) -> Pipeline:
    features = ColumnTransformer([
        ("numeric", StandardScaler(), numeric),
        ("categorical", OneHotEncoder(handle_unknown="ignore"), categorical),
    ])
    return Pipeline([("features", features), ("classifier", LogisticRegression(C=c, max_iter=1000))])


def train(request: TrainingRequest) -> TrainedModel:
    """Fit the pipeline on the request's rows; report training accuracy and row count."""
    pipeline = build_pipeline(request.numeric, request.categorical, c=float(request.params.get("C", 1.0)))
    X, y = request.data[request.features], request.data["label"]
    pipeline.fit(X, y)
    return TrainedModel(estimator=pipeline, metrics={"train_accuracy": float(pipeline.score(X, y))})
