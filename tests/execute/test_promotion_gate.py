"""The champion/challenger gate: a paired non-inferiority test that knows the window's size, and a fairness gate."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from mape.config import PromotionConfig
from mape.execute.gate import compare, group_gap, paired_advantage


class Fixed:
    """An 'estimator' whose predictions are given: the gate only calls predict."""

    def __init__(self, predictions: np.ndarray) -> None:
        self.predictions = np.asarray(predictions)

    def predict(self, X: pd.DataFrame) -> np.ndarray:
        return self.predictions[X.index.to_numpy()]


def answers(truth: np.ndarray, accuracy: float, rng: np.random.Generator) -> np.ndarray:
    """Predictions that are right with probability ``accuracy``, independently per row."""
    right = rng.uniform(size=len(truth)) < accuracy
    return np.where(right, truth, 1 - truth)


def frame(truth: np.ndarray, **columns: np.ndarray) -> pd.DataFrame:
    return pd.DataFrame({"x": np.zeros(len(truth)), "label": truth, **columns})


def gate(candidate, champion, data, **kwargs):
    settings = {"features": ["x"], "task": "classification", "margin": 0.0, "min_samples": 50,
                "test": "noninferiority"} | kwargs
    return compare(Fixed(candidate), None if champion is None else Fixed(champion), data, **settings)


def test_two_models_that_agree_on_every_row_pass_at_margin_zero():
    rng = np.random.default_rng(0)
    truth = rng.integers(0, 2, 500)
    same = answers(truth, 0.8, rng)
    verdict = gate(same, same.copy(), frame(truth))
    assert verdict.passed and verdict.difference == 0.0 and verdict.lower_bound == 0.0


def test_a_small_window_cannot_promote_a_model_that_only_looks_as_good():
    """On 120 rows, a candidate one point ahead by luck is not shown to be within margin 0; the plain numbers say yes."""
    rng = np.random.default_rng(3)
    truth = rng.integers(0, 2, 120)
    champion = answers(truth, 0.80, rng)
    candidate = champion.copy()
    # disagree on 30 rows: 16 the champion got wrong and the candidate right, 14 the other way round
    wrong, right = np.flatnonzero(champion != truth), np.flatnonzero(champion == truth)
    candidate[wrong[:16]] = truth[wrong[:16]]
    candidate[right[:14]] = 1 - truth[right[:14]]
    data = frame(truth)
    point = gate(candidate, champion, data, test="point")
    assert point.passed
    strict = gate(candidate, champion, data)
    assert not strict.passed
    assert strict.lower_bound is not None and strict.lower_bound < 0 < strict.candidate["accuracy"] - 0.5
    assert "95% lower bound" in strict.reason and "not shown to be within the margin" in strict.reason
    # 120 rows bound the advantage only to within about 6 points: a margin of 10 accepts the same evidence
    assert gate(candidate, champion, data, margin=0.10).passed


def test_a_clearly_better_candidate_passes_and_a_clearly_worse_one_fails():
    rng = np.random.default_rng(1)
    truth = rng.integers(0, 2, 2000)
    champion, better, worse = answers(truth, 0.75, rng), answers(truth, 0.90, rng), answers(truth, 0.60, rng)
    assert gate(better, champion, frame(truth)).passed
    verdict = gate(worse, champion, frame(truth), margin=0.05)
    assert not verdict.passed and verdict.difference < -0.1


def test_the_false_promotion_rate_of_an_equally_good_candidate_is_the_test_level():
    """Equal true accuracy, independent errors, 200 rows, margin 0: promoted about 5 % of the time (one-sided 95 %)."""
    rng = np.random.default_rng(7)
    promoted = 0
    runs = 400
    for _ in range(runs):
        truth = rng.integers(0, 2, 200)
        promoted += gate(answers(truth, 0.8, rng), answers(truth, 0.8, rng), frame(truth)).passed
    assert promoted / runs <= 0.08, promoted
    assert promoted / runs >= 0.02, promoted  # the test is not vacuous either


def test_regression_compares_absolute_errors_row_by_row():
    rng = np.random.default_rng(2)
    truth = rng.normal(size=800)
    champion = truth + rng.normal(scale=1.0, size=800)
    candidate = truth + rng.normal(scale=0.5, size=800)
    data = pd.DataFrame({"x": np.zeros(800), "label": truth})
    verdict = compare(Fixed(candidate), Fixed(champion), data, features=["x"], task="regression", margin=0.0,
                      min_samples=50, test="noninferiority")
    assert verdict.passed and verdict.metric == "mae" and verdict.candidate["mae"] < verdict.champion["mae"]
    mean, low = paired_advantage(candidate, champion, truth, task="regression", confidence=0.95)
    assert mean == pytest.approx(verdict.champion["mae"] - verdict.candidate["mae"]) and low < mean


def _unfair_world(n: int = 4000, seed: int = 5):
    """Two groups; the champion errs alike in both, the candidate as often overall but mostly on group b's positives."""
    rng = np.random.default_rng(seed)
    group = np.where(rng.uniform(size=n) < 0.5, "a", "b")
    truth = rng.integers(0, 2, n)
    champion = answers(truth, 0.85, rng)
    candidate = truth.copy()
    errors_a = (group == "a") & (rng.uniform(size=n) < 0.06)
    errors_b = (group == "b") & (truth == 1) & (rng.uniform(size=n) < 0.48)
    candidate[errors_a | errors_b] = 1 - truth[errors_a | errors_b]
    return truth, group, champion, candidate


def test_the_fairness_gate_rejects_an_accurate_candidate_that_widens_a_group_gap():
    truth, group, champion, candidate = _unfair_world()
    data = frame(truth, group=group)
    plain = gate(candidate, champion, data, margin=0.02)
    assert plain.passed and plain.fairness is None  # without sensitive columns only accuracy is judged
    verdict = gate(candidate, champion, data, margin=0.02, sensitive=["group"], fairness_bound=0.05)
    assert not verdict.passed
    fairness = verdict.fairness
    assert fairness["passed"] is False and fairness["metric"] == "equalized_odds_difference"
    assert fairness["candidate"] > fairness["champion"] + 0.05
    assert "equalized_odds_difference" in verdict.reason and "wider than production's" in verdict.reason
    # a bound wide enough lets it through, with the numbers kept
    wide = gate(candidate, champion, data, margin=0.02, sensitive=["group"], fairness_bound=0.9)
    assert wide.passed and wide.fairness["passed"] is True


def test_small_groups_are_left_out_of_the_fairness_gate():
    truth, group, champion, candidate = _unfair_world(n=600)
    data = frame(truth, group=group)
    verdict = gate(candidate, champion, data, sensitive=["group"], fairness_bound=0.05, min_group_size=1000)
    assert verdict.fairness["passed"] is None and "two groups of at least 1000 rows" in verdict.fairness["reason"]
    worst, gaps = group_gap(truth, candidate, data, sensitive=["group"], metric="demographic_parity_difference",
                            min_group_size=10)
    assert worst == gaps["group"] and 0 <= worst <= 1


def test_too_few_rows_is_a_rejection_that_says_so():
    truth = np.array([0, 1] * 20)
    verdict = gate(truth, truth, frame(truth), min_samples=100)
    assert not verdict.passed and "only 40 labelled rows" in verdict.reason


def test_promotion_settings_are_validated():
    assert PromotionConfig().test == "noninferiority" and PromotionConfig().fairness_bound == 0.05
    with pytest.raises(ValueError, match="confidence"):
        PromotionConfig(confidence=0.4)
    with pytest.raises(ValueError, match="fairness_metric"):
        PromotionConfig(fairness_metric="vibes")
