"""Forecasters for backtests: perfect is the series, noisy is seeded, naive and past never read the future."""

from __future__ import annotations

from datetime import timedelta

import numpy as np
import pytest

from examples.carbon.windy_grid import windy_grid
from mape.errors import InvalidParameterError
from mape.plan.scheduling.forecast import NaiveSeasonal, Noisy, PastProfile, Perfect, make_forecaster

HOUR = timedelta(hours=1)


@pytest.fixture(scope="module")
def windy() -> np.ndarray:
    return windy_grid(days=70).values


def test_perfect_is_the_actual_series(windy: np.ndarray):
    assert np.array_equal(Perfect(step=HOUR).predict(windy, 100, 24), windy[100:124])


def test_noisy_is_seeded_per_issue_and_has_the_asked_relative_error(windy: np.ndarray):
    noisy = Noisy(0.05, step=HOUR)
    first = noisy.predict(windy, 500, 24)
    assert np.array_equal(first, noisy.predict(windy, 500, 24)), "same issue, same forecast"
    assert np.array_equal(first[:10], noisy.predict(windy, 500, 10)), "the horizon does not change the draws"
    assert not np.array_equal(first, noisy.predict(windy, 501, 24)[:24]), "another issue, other draws"
    assert not np.array_equal(first, Noisy(0.05, step=HOUR, seed=1).predict(windy, 500, 24))
    relative = np.concatenate([noisy.predict(windy, i, 24) / windy[i:i + 24] - 1 for i in range(0, 1600, 24)])
    assert relative.std() == pytest.approx(0.05, rel=0.1) and abs(relative.mean()) < 0.005


@pytest.mark.parametrize("forecaster", [NaiveSeasonal(step=HOUR), NaiveSeasonal(step=HOUR, lag=timedelta(days=7)),
                                        PastProfile(step=HOUR)], ids=["naive", "naive:1w", "past"])
@pytest.mark.parametrize("at", [0, 5, 30, 24 * 7 + 3, 24 * 40])
def test_forecasters_from_the_past_never_read_the_future(windy: np.ndarray, forecaster, at: int):
    honest = forecaster.predict(windy, at, 30)
    corrupted = windy.copy()
    corrupted[at:] = np.random.default_rng(at).uniform(0, 1e6, size=len(windy) - at)
    assert np.array_equal(honest, forecaster.predict(corrupted, at, 30))
    assert honest.shape == (30,) and np.all(honest >= 0) and np.all(np.isfinite(honest))


def test_naive_repeats_the_last_season():
    values = np.arange(48.0)
    assert NaiveSeasonal(step=HOUR).predict(values, 30, 30).tolist() == list(range(6, 30)) + list(range(6, 12))


def test_past_learns_a_daily_and_weekly_cycle():
    hours = np.arange(24 * 7 * 10)
    weekly = np.where((hours // 24) % 7 >= 5, -40.0, 0.0)
    series = 200 + 60 * np.sin(2 * np.pi * hours / 24) + weekly
    at = 24 * 7 * 9
    forecast = PastProfile(step=HOUR).predict(series, at, 48)
    assert np.max(np.abs(forecast - series[at:at + 48])) < 12  # the weekly effect is shrunk by weeks / (weeks + 1)


def test_past_carries_the_recent_level_on(windy: np.ndarray):
    step = timedelta(hours=1)
    raised = windy.copy()
    raised[24 * 40 - 12:24 * 40] += 150  # a spell of dirty hours just before the issue
    base = PastProfile(step=step).predict(windy, 24 * 40, 12)
    after = PastProfile(step=step).predict(raised, 24 * 40, 12)
    assert after[0] - base[0] > 60, "the next hours start near the recent level"
    assert after[0] - base[0] > after[-1] - base[-1], "and it fades"


def test_past_works_at_five_minutes_and_with_little_history():
    fine = windy_grid(days=30, step=timedelta(minutes=5)).values
    forecast = PastProfile(step=timedelta(minutes=5)).predict(fine, 288 * 20, 108)
    assert forecast.shape == (108,) and np.all(forecast > 0)
    assert PastProfile(step=HOUR).predict(np.array([100.0, 120.0]), 2, 5).tolist() == [120.0] * 5
    assert PastProfile(step=HOUR).predict(np.array([100.0]), 0, 3).tolist() == [0.0] * 3


@pytest.mark.parametrize(("spec", "name"), [("past", "past"), ("perfect", "perfect"), ("noisy:0.05", "noisy:0.05"),
                                            ("naive", "naive"), ("naive:1w", "naive:1w"), (" past ", "past")])
def test_make_forecaster_reads_the_command_line_spellings(spec: str, name: str):
    assert make_forecaster(spec, step=HOUR).name == name


@pytest.mark.parametrize("spec", ["oracle", "noisy", "noisy:x", "noisy:1.5", "noisy:-0.1", "naive:90m", "past:3"])
def test_make_forecaster_refuses_what_it_does_not_know(spec: str):
    with pytest.raises(InvalidParameterError, match=r"The 'forecast' parameter of backtest must be one of past, "
                                                    r"perfect, noisy:SIGMA, naive\[:LAG\]"):
        make_forecaster(spec, step=HOUR)
