"""The champion/challenger gate: a candidate is promoted only if it does at least as well, and as fairly.

Who calls it: the ``retrain`` effector, after training, on the most recent
labelled window — data the candidate was not trained on. Classification
compares accuracy (higher is better), regression mean absolute error (lower
is better); the candidate may be worse by at most ``margin``.

**Window size.** Both models predict the same rows, so the comparison is
paired: per row, ``a = 1[candidate right] - 1[production right]`` (for
regression, production's absolute error minus the candidate's), and the
candidate's advantage is the mean of ``a``. With ``test="noninferiority"``
(the default) the candidate passes only if the one-sided lower confidence
bound of that mean (Student's t, level ``confidence``) is at least
``-margin``: on a small window a candidate that merely looks as good is not
promoted, and two models that agree on every row pass (the bound is their
difference, 0). ``test="point"`` compares the two numbers alone.

**Fairness.** With ``sensitive`` columns (the model's fairness section), the
candidate's worst group gap (``fairness_metric``, fairlearn, over each
attribute's groups of at least ``min_group_size`` rows) may exceed
production's by at most ``fairness_bound``.

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

import math
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np
import pandas as pd
from fairlearn import metrics as flm
from scipy import stats


@dataclass(frozen=True)
class GateVerdict:
    """The gate's numbers and verdict; stored on the candidate version as its ``evaluation``.

    ``difference`` is the candidate's mean paired advantage (positive: better)
    and ``lower_bound`` its one-sided confidence bound; ``fairness`` holds the
    group gaps of both models, or why they were not compared.
    """

    passed: bool
    metric: str
    candidate: dict[str, float]
    champion: dict[str, float] | None
    n: int
    margin: float
    reason: str
    test: str = "point"
    difference: float | None = None
    lower_bound: float | None = None
    confidence: float | None = None
    fairness: dict[str, Any] | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def score(estimator: Any, data: pd.DataFrame, *, features: list[str], task: str, label: str = "label") -> dict[str, float]:
    return _metrics(np.asarray(estimator.predict(data[features])), data[label].to_numpy(), task)


def _metrics(predictions: np.ndarray, truth: np.ndarray, task: str) -> dict[str, float]:
    if task == "classification":
        return {"accuracy": float(np.mean(predictions == truth))}
    errors = predictions.astype(float) - truth.astype(float)
    return {"mae": float(np.mean(np.abs(errors))), "rmse": float(np.sqrt(np.mean(errors**2)))}


def paired_advantage(candidate: np.ndarray, champion: np.ndarray, truth: np.ndarray, *, task: str,
                     confidence: float) -> tuple[float, float]:
    """The candidate's mean per-row advantage and its one-sided lower confidence bound.

    >>> truth = np.array([1, 1, 0, 0] * 50)
    >>> paired_advantage(truth.copy(), truth.copy(), truth, task="classification", confidence=0.95)
    (0.0, 0.0)
    >>> d, low = paired_advantage(truth.copy(), 1 - truth, truth, task="classification", confidence=0.95)
    >>> d, low
    (1.0, 1.0)
    """
    if task == "classification":
        advantage = (candidate == truth).astype(float) - (champion == truth).astype(float)
    else:
        advantage = np.abs(champion.astype(float) - truth) - np.abs(candidate.astype(float) - truth)
    n = len(advantage)
    mean = float(advantage.mean())
    spread = float(advantage.std(ddof=1)) if n > 1 else math.inf
    if spread == 0.0:
        return mean, mean
    return mean, mean - float(stats.t.ppf(confidence, n - 1)) * spread / math.sqrt(n)


def group_gap(truth: np.ndarray, predictions: np.ndarray, data: pd.DataFrame, *, sensitive: Sequence[str],
              metric: str, min_group_size: int) -> tuple[float | None, dict[str, float]]:
    """The worst ``metric`` gap over the sensitive attributes (groups below ``min_group_size`` left out), and each."""
    function = getattr(flm, metric)
    gaps: dict[str, float] = {}
    for column in sensitive:
        groups = data[column].astype("string").fillna("<missing>").to_numpy()
        values, counts = np.unique(groups, return_counts=True)
        kept = np.isin(groups, values[counts >= min_group_size])
        if len(values[counts >= min_group_size]) < 2:
            continue  # fewer than two groups large enough: no gap to measure
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # fairlearn warns about groups without positives; the gap is still defined
            gaps[column] = float(function(truth[kept], predictions[kept], sensitive_features=groups[kept]))
    return (max(gaps.values()) if gaps else None), gaps


GAP_METRICS: tuple[str, ...] = ("demographic_parity_difference", "equalized_odds_difference",
                                "equal_opportunity_difference")
"""The group gaps the gate records for both models, whichever one it judges by (policies read them as ``promotion.*``)."""


def all_gaps(truth: np.ndarray, ours: np.ndarray, theirs: np.ndarray | None, data: pd.DataFrame, *,
             sensitive: Sequence[str], min_group_size: int) -> dict[str, dict[str, float | None]]:
    """Every gap of :data:`GAP_METRICS`, worst over the attributes, for the candidate and the champion.

    Recorded on the candidate's evaluation so that a later decision can ask
    whether the version in production was fairer than the one it replaced on
    the same rows (``fairness-guard`` does before it rolls back).

    >>> truth = np.array([1, 0] * 100)
    >>> data = pd.DataFrame({"group": ["a"] * 100 + ["b"] * 100})
    >>> fair, unfair = truth.copy(), np.r_[truth[:100], np.zeros(100, dtype=int)]
    >>> gaps = all_gaps(truth, fair, unfair, data, sensitive=["group"], min_group_size=50)
    >>> gaps["demographic_parity_difference"]
    {'candidate': 0.0, 'champion': 0.5}
    """
    found: dict[str, dict[str, float | None]] = {}
    for metric in GAP_METRICS:
        found[metric] = {"candidate": group_gap(truth, ours, data, sensitive=sensitive, metric=metric,
                                                min_group_size=min_group_size)[0]}
        if theirs is not None:
            found[metric]["champion"] = group_gap(truth, theirs, data, sensitive=sensitive, metric=metric,
                                                  min_group_size=min_group_size)[0]
    return found


def compare(
    candidate: Any, champion: Any | None, data: pd.DataFrame, *, features: list[str], task: str, margin: float,
    min_samples: int, label: str = "label", test: Literal["noninferiority", "point"] = "point",
    confidence: float = 0.95, sensitive: Sequence[str] = (), fairness_bound: float | None = None,
    fairness_metric: str = "equalized_odds_difference", min_group_size: int = 50,
) -> GateVerdict:
    """Score both on ``data``; pass when the candidate is not worse than the champion beyond ``margin`` (and as fair)."""
    metric = "accuracy" if task == "classification" else "mae"
    n = len(data)
    if n < min_samples:
        return GateVerdict(False, metric, {}, None, n, margin,
                           f"only {n} labelled rows in the evaluation window; at least {min_samples} are needed",
                           test=test)
    truth = data[label].to_numpy()
    ours = np.asarray(candidate.predict(data[features]))
    cand = _metrics(ours, truth, task)
    theirs = None if champion is None else np.asarray(champion.predict(data[features]))
    fairness = _fairness(truth, ours, theirs, data, task=task, sensitive=sensitive, bound=fairness_bound,
                         metric=fairness_metric, min_group_size=min_group_size)
    if theirs is None:
        passed = fairness is None or fairness["passed"] is not False
        reason = "no production version to beat" + ("" if passed else f"; {fairness['reason']}")  # type: ignore[index]
        return GateVerdict(passed, metric, cand, None, n, margin, reason, test=test, fairness=fairness)
    champ = _metrics(theirs, truth, task)
    difference, lower = paired_advantage(ours, theirs, truth, task=task, confidence=confidence)
    if test == "noninferiority":
        passed = lower >= -margin
        relation = ("not worse than" if passed else "not shown to be within the margin of")
        reason = (f"candidate {metric} {cand[metric]:.4f} vs production's {champ[metric]:.4f} on {n} held-out "
                  f"labelled rows: advantage {difference:+.4f}, {confidence:.0%} lower bound {lower:+.4f}, so it is "
                  f"{relation} production (margin {margin})")
    else:
        passed = cand[metric] >= champ[metric] - margin if metric == "accuracy" else cand[metric] <= champ[metric] + margin
        relation = ("at least as accurate as" if passed else "less accurate than") if metric == "accuracy" else (
            "no worse than" if passed else "worse than")
        reason = (f"candidate {metric} {cand[metric]:.4f} is {relation} production's {champ[metric]:.4f} "
                  f"(margin {margin}) on {n} held-out labelled rows")
    if fairness is not None and fairness["passed"] is False:
        passed = False
        reason += f"; {fairness['reason']}"
    return GateVerdict(passed, metric, cand, champ, n, margin, reason, test=test, difference=difference,
                       lower_bound=lower, confidence=confidence, fairness=fairness)


def _fairness(truth: np.ndarray, ours: np.ndarray, theirs: np.ndarray | None, data: pd.DataFrame, *, task: str,
              sensitive: Sequence[str], bound: float | None, metric: str, min_group_size: int) -> dict[str, Any] | None:
    """The fairness gate's numbers: ``passed`` is True, False, or None when it could not judge (and why)."""
    if not sensitive or bound is None:
        return None
    result: dict[str, Any] = {"metric": metric, "bound": bound, "min_group_size": min_group_size}
    labels = set(np.unique(truth).tolist())
    if task != "classification" or not labels <= {0, 1, True, False}:
        return result | {"passed": None, "reason": "fairness gate skipped: it needs a 0/1 classification label"}
    missing = [c for c in sensitive if c not in data.columns]
    if missing:
        return result | {"passed": None, "reason": f"fairness gate skipped: no column {', '.join(missing)} in the window"}
    worst, gaps = group_gap(truth, ours, data, sensitive=sensitive, metric=metric, min_group_size=min_group_size)
    result |= {"candidate": worst, "candidate_by_attribute": gaps,
               "gaps": all_gaps(truth, ours, theirs, data, sensitive=sensitive, min_group_size=min_group_size)}
    if worst is None:
        return result | {"passed": None, "reason": f"fairness gate skipped: no attribute has two groups of at least "
                                                   f"{min_group_size} rows"}
    if theirs is None:
        return result | {"passed": True, "reason": f"candidate {metric} {worst:.4f}; no production version to compare"}
    champion_worst, champion_gaps = group_gap(truth, theirs, data, sensitive=sensitive, metric=metric,
                                              min_group_size=min_group_size)
    result |= {"champion": champion_worst, "champion_by_attribute": champion_gaps}
    if champion_worst is None:
        return result | {"passed": None, "reason": "fairness gate skipped: production's gap is undefined"}
    passed = worst <= champion_worst + bound
    verb = "within" if passed else "wider than"
    return result | {"passed": passed, "reason": f"candidate {metric} {worst:.4f} is {verb} production's "
                                                 f"{champion_worst:.4f} + {bound}"}
