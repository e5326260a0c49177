"""The adaptation benchmark's figures on cases whose answer is known, and its baselines' schedules."""

from __future__ import annotations

import doctest
import importlib

import numpy as np
import pytest

from benchmarks.adaptation import metrics
from benchmarks.adaptation.report import goals
from benchmarks.adaptation.scenarios import SCENARIOS, TRAIN_WINDOW
from benchmarks.adaptation.strategies import run_baseline
from benchmarks.adaptation.trace import Action, Trace


@pytest.mark.parametrize("module", ["metrics", "scenarios", "svg", "trace", "report"])
def test_doctests(module: str) -> None:
    result = doctest.testmod(importlib.import_module(f"benchmarks.adaptation.{module}"))
    assert result.attempted > 0 and result.failed == 0


def test_prequential_accuracy_of_a_constant_stream_is_that_accuracy() -> None:
    assert metrics.accuracy_area([0.87] * 200) == pytest.approx(0.87)
    assert metrics.worst_window([0.87] * 200) == pytest.approx(0.87)


def test_an_a_b_a_sequence_counts_as_one_oscillation() -> None:
    assert metrics.oscillations([(5, "retrain"), (9, "rollback"), (12, "retrain")]) == 1
    assert metrics.oscillations([(5, "retrain"), (9, "rollback"), (12, "retrain"), (15, "rollback")]) == 2
    assert metrics.oscillations([(5, "retrain"), (9, "rollback"), (60, "retrain")]) == 0  # outside the window
    assert metrics.oscillations([(5, "retrain"), (9, "retrain"), (12, "retrain")]) == 0


def test_latency_chain_and_settling_on_a_hand_made_trace() -> None:
    accuracy = [0.9] * 19 + [0.6] * 5 + [0.9] * 16  # change at tick 20; recovered from tick 25
    trace = Trace("x", "s", 0, accuracy=accuracy, gap=[0.0] * 40, version=[1] * 40,
                  actions=[Action(24, "retrain", "promoted", 22)], decisions=[(22, "retrain")],
                  symptoms=[(21, "data_drift")])
    figures = metrics.episode_figures(trace, 20, 41)
    assert figures["pre_change_accuracy"] == pytest.approx(0.9)
    assert figures["detection_delay"] == 2
    assert figures["latency"] == {"symptom": 1, "decision": 2, "action": 4, "effect": 5}
    assert figures["settling_time"] == 7  # the 3-tick rolling mean is back in the band at tick 27


def test_a_change_never_recovered_from_has_no_effect_and_no_settling() -> None:
    trace = Trace("x", "s", 0, accuracy=[0.9] * 9 + [0.6] * 11, gap=[0.0] * 20, version=[1] * 20)
    figures = metrics.episode_figures(trace, 10, 21)
    assert figures["detection_delay"] is None and figures["latency"]["effect"] is None
    assert figures["settling_time"] is None


def test_median_over_seeds() -> None:
    folded = metrics.median_of([{"a": 1, "b": None, "episodes": []}, {"a": 3, "b": None, "episodes": []},
                                {"a": 2, "b": None, "episodes": []}])
    assert folded == {"a": 2.0, "b": None, "episodes": []}


@pytest.fixture(scope="module")
def abrupt() -> object:
    return SCENARIOS["abrupt-covariate"].quick(ticks=30, change=10, rows=300)


def test_the_oracle_decides_at_the_change_and_retrains_when_its_window_is_all_new(abrupt: object) -> None:
    trace = run_baseline("oracle", abrupt, seed=0)
    summary = metrics.summarize(trace, abrupt)
    assert summary["episodes"][0]["detection_delay"] == 0
    assert [a.tick for a in trace.actions] == [10 + TRAIN_WINDOW - 1]
    assert summary["retrains"] == 1 and summary["oscillations"] == 0
    assert summary["energy_kwh"] is None or summary["energy_kwh"] >= 0
    assert summary["train_cpu_s"] > 0 and summary["energy_cpu_estimate_kwh"] > 0


def test_no_adaptation_never_retrains_and_periodic_retrains_on_its_period(abrupt: object) -> None:
    none = metrics.summarize(run_baseline("none", abrupt, seed=0), abrupt)
    assert none["retrains"] == 0 and none["energy_kwh"] == 0 and none["energy_cpu_estimate_kwh"] == 0 and none["episodes"][0]["detection_delay"] is None
    periodic = run_baseline("periodic", abrupt, seed=0)
    assert [a.tick for a in periodic.actions] == [24]
    oracle = metrics.summarize(run_baseline("oracle", abrupt, seed=0), abrupt)
    assert oracle["accuracy_area"] > none["accuracy_area"] + 0.02  # the shift is one a retrain cures


def test_every_strategy_sees_the_same_batches(abrupt: object) -> None:
    first, second = abrupt.batch(12, seed=3), abrupt.batch(12, seed=3)
    assert first.equals(second)
    assert not first.equals(abrupt.batch(12, seed=4))


def test_false_retrains_counted_on_streams_without_change() -> None:
    stationary = SCENARIOS["stationary"].quick(ticks=48, rows=200)
    periodic = metrics.summarize(run_baseline("periodic", stationary, seed=0), stationary)
    assert periodic["false_retrains_per_1000_ticks"] == pytest.approx(2 * 1000 / 48, abs=0.01)
    assert "false_retrains_per_1000_ticks" not in metrics.summarize(
        run_baseline("none", SCENARIOS["abrupt-covariate"].quick(ticks=20, rows=200), seed=0),
        SCENARIOS["abrupt-covariate"].quick(ticks=20, rows=200))


def test_goals_fail_when_mape_retrains_more_than_the_oracle_allows() -> None:
    strategies = {"mape": {"accuracy_area": 0.9, "retrains": 3, "false_retrains_per_1000_ticks": 12.5},
                  "oracle": {"accuracy_area": 0.9, "retrains": 0}, "periodic": {"accuracy_area": 0.9, "retrains": 5}}
    verdict = goals(strategies, false_alarm_stream=True)
    assert verdict == {"accuracy_vs_oracle": True, "retrains_vs_oracle": False, "false_retrains": False,
                       "vs_periodic": True}
    assert np.isnan(metrics.accuracy_area([]))
