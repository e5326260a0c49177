"""The champion/challenger gate: a candidate is promoted only if it does at least as well.

Who calls it: the ``retrain`` effector, after training, on the most recent
labelled window — data the candidate was not trained on. Classification
compares accuracy (higher is better), regression mean absolute error (lower
is better); the candidate may be worse by at most ``margin``.

>>> import numpy as np
>>> class Const:
...     def __init__(self, v): self.v = v
...     def predict(self, X): return np.full(len(X), self.v)
>>> import pandas as pd
>>> data = pd.DataFrame({"x": range(10), "label": [1] * 8 + [0] * 2})
>>> verdict = compare(Const(1), Const(0), data, features=["x"], task="classification", margin=0.0, min_samples=5)
>>> verdict.passed, verdict.candidate["accuracy"], verdict.champion["accuracy"]
(True, 0.8, 0.2)
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd


@dataclass(frozen=True)
class GateVerdict:
    passed: bool
    metric: str
    candidate: dict[str, float]
    champion: dict[str, float] | None
    n: int
    margin: float
    reason: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def score(estimator: Any, data: pd.DataFrame, *, features: list[str], task: str, label: str = "label") -> dict[str, float]:
    predictions = np.asarray(estimator.predict(data[features]))
    truth = data[label].to_numpy()
    if task == "classification":
        return {"accuracy": float(np.mean(predictions == truth))}
    errors = predictions.astype(float) - truth.astype(float)
    return {"mae": float(np.mean(np.abs(errors))), "rmse": float(np.sqrt(np.mean(errors**2)))}


def compare(
    candidate: Any, champion: Any | None, data: pd.DataFrame, *, features: list[str], task: str, margin: float,
    min_samples: int, label: str = "label",
) -> GateVerdict:
    """Score both on ``data``; pass when the candidate is not worse than the champion by more than ``margin``."""
    metric = "accuracy" if task == "classification" else "mae"
    n = len(data)
    if n < min_samples:
        return GateVerdict(False, metric, {}, None, n, margin,
                           f"only {n} labelled rows in the evaluation window; at least {min_samples} are needed")
    cand = score(candidate, data, features=features, task=task, label=label)
    if champion is None:
        return GateVerdict(True, metric, cand, None, n, margin, "no production version to beat")
    champ = score(champion, data, features=features, task=task, label=label)
    if metric == "accuracy":
        passed = cand[metric] >= champ[metric] - margin
        relation = "at least as accurate as" if passed else "less accurate than"
    else:
        passed = cand[metric] <= champ[metric] + margin
        relation = "no worse than" if passed else "worse than"
    reason = (f"candidate {metric} {cand[metric]:.4f} is {relation} production's {champ[metric]:.4f} "
              f"(margin {margin}) on {n} held-out labelled rows")
    return GateVerdict(passed, metric, cand, champ, n, margin, reason)
