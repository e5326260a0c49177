"""The credit model as a small torch MLP: ``examples.credit.torch_model:train`` (CPU).

The same contract as :mod:`examples.credit.model`: mape calls ``train`` with a
:class:`~mape.execute.training.TrainingRequest` and stores what it returns
with joblib. The estimator is scikit-learn shaped (``predict``,
``predict_proba``) so the promotion gate and the model servers use it like
any other: a scikit-learn ``ColumnTransformer`` prepares the features, a
two-layer MLP (torch, float32, Adam, full-batch epochs with a fixed seed)
classifies. The network is kept as a ``state_dict`` of tensors, so the
artifact loads without the training code's globals.

Select it with ``training: {entrypoint: examples.credit.torch_model:train,
params: {hidden: 32, epochs: 200}}``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import torch
from sklearn.compose import ColumnTransformer
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from mape.execute.training import TrainedModel, TrainingRequest


def _network(n_inputs: int, hidden: int) -> torch.nn.Sequential:
    return torch.nn.Sequential(torch.nn.Linear(n_inputs, hidden), torch.nn.ReLU(), torch.nn.Linear(hidden, 2))


class TorchMLPClassifier:
    """A binary classifier: scikit-learn preprocessing, then a torch MLP on CPU.

    Parameters
    ----------
    numeric, categorical : list of str
        Feature columns by kind.
    hidden : int, default 32
        Units of the hidden layer.
    epochs : int, default 200
        Full-batch passes of Adam over the training rows.
    learning_rate : float, default 0.01
    seed : int, default 0
        Seeds torch's initialisation, so a retrain on the same rows gives the same model.
    """

    def __init__(self, numeric: list[str], categorical: list[str], *, hidden: int = 32, epochs: int = 200,
                 learning_rate: float = 0.01, seed: int = 0) -> None:
        self.numeric, self.categorical = list(numeric), list(categorical)
        self.hidden, self.epochs, self.learning_rate, self.seed = hidden, epochs, learning_rate, seed

    def fit(self, X: pd.DataFrame, y: Any) -> TorchMLPClassifier:
        self.features_ = ColumnTransformer([
            ("numeric", StandardScaler(), self.numeric),
            ("categorical", OneHotEncoder(handle_unknown="ignore", sparse_output=False), self.categorical),
        ]).fit(X)
        labels = np.asarray(y)
        self.classes_ = np.unique(labels)
        if len(self.classes_) != 2:
            raise ValueError(f"TorchMLPClassifier is binary; the labels hold {len(self.classes_)} classes")
        inputs = torch.as_tensor(self.features_.transform(X), dtype=torch.float32)
        targets = torch.as_tensor(np.searchsorted(self.classes_, labels), dtype=torch.long)
        torch.manual_seed(self.seed)  # the initial weights: the same rows give the same model
        network = _network(inputs.shape[1], self.hidden)
        optimiser = torch.optim.Adam(network.parameters(), lr=self.learning_rate)
        loss = torch.nn.CrossEntropyLoss()
        for _ in range(self.epochs):
            optimiser.zero_grad()
            value = loss(network(inputs), targets)
            value.backward()
            optimiser.step()
        self.loss_ = float(value.detach())
        self.state_ = {k: v.detach().clone() for k, v in network.state_dict().items()}
        self.n_inputs_ = int(inputs.shape[1])
        return self

    def predict_proba(self, X: pd.DataFrame) -> np.ndarray:
        network = _network(self.n_inputs_, self.hidden)
        network.load_state_dict(self.state_)
        with torch.no_grad():
            logits = network(torch.as_tensor(self.features_.transform(X), dtype=torch.float32))
        return torch.softmax(logits, dim=1).numpy().astype(float)

    def predict(self, X: pd.DataFrame) -> np.ndarray:
        return self.classes_[np.argmax(self.predict_proba(X), axis=1)]

    def score(self, X: pd.DataFrame, y: Any) -> float:
        return float(np.mean(self.predict(X) == np.asarray(y)))


def train(request: TrainingRequest) -> TrainedModel:
    """Fit the MLP on the request's rows; report training accuracy and final loss."""
    params = request.params
    model = TorchMLPClassifier(request.numeric, request.categorical, hidden=int(params.get("hidden", 32)),
                               epochs=int(params.get("epochs", 200)),
                               learning_rate=float(params.get("learning_rate", 0.01)), seed=int(params.get("seed", 0)))
    X, y = request.data[request.features], request.data["label"]
    model.fit(X, y)
    return TrainedModel(estimator=model, metrics={"train_accuracy": model.score(X, y), "train_loss": model.loss_})
