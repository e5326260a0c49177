"""The sliding-window search: hand-computable step functions, ties, partial steps, mixes and bad requests."""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone

import numpy as np
import pytest

from mape.errors import ScheduleError
from mape.plan.scheduling.window import Steps, best_window, objective_weights

UTC = timezone.utc
T0 = datetime(2026, 3, 10, tzinfo=UTC)
H = timedelta(hours=1)


def at(hours: float) -> datetime:
    return T0 + timedelta(hours=hours)


def hourly(*values: float) -> Steps:
    return Steps.regular(T0, H, values)


def brute_force(steps: Steps, duration: timedelta, earliest: datetime, latest: datetime,
                resolution: timedelta = timedelta(minutes=1)) -> float:
    """The lowest mean over starts every minute: what the exact search must match or beat."""
    best = np.inf
    start = earliest
    while start <= latest:
        best = min(best, steps.mean(start, start + duration))
        start += resolution
    return best


def test_a_two_hour_job_finds_the_cheapest_pair_of_hours():
    grid = hourly(300, 100, 200, 50, 400)
    window = best_window(grid, duration=2 * H, earliest=at(0), latest_start=at(3))
    assert (window.start, window.end) == (at(2), at(4))
    assert window.score == 125.0 and window.run_now_score == 200.0
    assert window.gain == 75.0 and window.saving == pytest.approx(0.375)
    assert window.means == {"carbon": 125.0} and window.run_now_means == {"carbon": 200.0}


def test_ties_go_to_the_earliest_start():
    grid = hourly(300, 100, 300, 100, 300)
    window = best_window(grid, duration=H, earliest=at(0), latest_start=at(4))
    assert window.start == at(1)
    flat = hourly(200, 200, 200)
    assert best_window(flat, duration=H, earliest=at(0), latest_start=at(2)).start == at(0), "nothing to gain: now"


def test_rounding_does_not_break_a_tie():
    grid = hourly(0.1 + 0.2, 0.3, 0.1 + 0.2, 0.3)  # 0.30000000000000004 and 0.3
    assert best_window(grid, duration=H, earliest=at(0), latest_start=at(3)).start == at(0)


def test_an_earliest_start_off_the_grid_is_a_candidate_and_so_is_the_latest():
    grid = hourly(100, 300, 300, 50)
    window = best_window(grid, duration=H, earliest=at(0.5), latest_start=at(2.75))
    # from 00:30 the job has half an hour at 100 and half at 300 (200); 02:00 gives 300; 02:45 gives 0.25*300+0.75*50
    assert window.run_now_score == 200.0
    assert window.start == at(2.75) and window.score == pytest.approx(112.5)


def test_a_job_shorter_than_a_step_and_one_not_a_multiple_of_it():
    grid = hourly(200, 100, 300, 200)
    short = best_window(grid, duration=timedelta(minutes=30), earliest=at(0), latest_start=at(3))
    assert short.start == at(1) and short.score == 100.0
    odd = best_window(grid, duration=timedelta(minutes=90), earliest=at(0), latest_start=at(2.5))
    # starts at 00:30 (half 200, full 100) give 133.3, the best; the breakpoints 00:30 = 02:00 - 90 min are candidates
    assert odd.start == at(0.5) and odd.score == pytest.approx(400 / 3)


@pytest.mark.parametrize("seed", range(5))
def test_the_exact_search_matches_brute_force_on_random_irregular_steps(seed: int):
    rng = np.random.default_rng(seed)
    gaps = rng.choice([5, 10, 15, 30, 60], size=40)
    times = T0.timestamp() + 60.0 * np.concatenate([[0], np.cumsum(gaps[:-1])])
    steps = Steps(times, rng.uniform(50, 400, size=40), times[-1] + 60.0 * gaps[-1])
    duration = timedelta(minutes=int(rng.integers(7, 120)))
    earliest = T0 + timedelta(minutes=int(rng.integers(0, 60)))
    latest = earliest + timedelta(minutes=int(rng.integers(0, 300)))
    window = best_window(steps, duration=duration, earliest=earliest, latest_start=latest)
    # every breakpoint is a whole minute, so a search over every minute is exact too
    assert window.score == pytest.approx(brute_force(steps, duration, earliest, latest), rel=1e-12)
    assert earliest <= window.start <= latest


def test_from_points_takes_a_provider_forecast_whose_first_step_began_earlier():
    points = [(at(-0.5), 300.0), (at(1), 100.0), (at(2), 250.0)]
    steps = Steps.from_points(points, end=at(4))
    window = best_window(steps, duration=H, earliest=at(0), latest_start=at(3))
    assert window.start == at(1) and window.run_now_score == 300.0


def test_a_series_that_ends_early_limits_the_latest_start_and_says_so():
    grid = hourly(300, 250, 200)
    window = best_window(grid, duration=H, earliest=at(0), latest_start=at(8))
    assert window.start == at(2) and window.truncated and window.latest_start == at(2)
    assert not best_window(grid, duration=H, earliest=at(0), latest_start=at(1)).truncated


def test_price_alone_and_a_normalised_mix():
    carbon = hourly(100, 200, 100, 200)
    price = hourly(80, 40, 40, 40)
    assert best_window({"price": price}, duration=H, earliest=at(0), latest_start=at(3)).start == at(1)
    # span means: carbon 150, price 50. Relative levels per hour: carbon 2/3, 4/3, 2/3, 4/3; price 1.6, 0.8, 0.8, 0.8
    mix = best_window({"carbon": carbon, "price": price}, duration=H, earliest=at(0), latest_start=at(3),
                      weights={"carbon": 0.5, "price": 0.5})
    assert mix.start == at(2)
    assert mix.score == pytest.approx(0.5 * 2 / 3 + 0.5 * 0.8)
    assert mix.means == {"carbon": 100.0, "price": 40.0} and mix.run_now_means == {"carbon": 100.0, "price": 80.0}
    carbon_only = best_window({"carbon": carbon, "price": price}, duration=H, earliest=at(0), latest_start=at(3),
                              weights={"carbon": 1.0, "price": 0.0})
    assert carbon_only.start == at(0) and carbon_only.means == {"carbon": 100.0}


def test_scaling_a_series_does_not_change_the_mix():
    carbon, price = hourly(100, 200, 120, 90), hourly(30, 20, 60, 50)
    kwargs = dict(duration=H, earliest=at(0), latest_start=at(3), weights={"carbon": 0.6, "price": 0.4})
    first = best_window({"carbon": carbon, "price": price}, **kwargs)
    scaled = best_window({"carbon": carbon, "price": Steps(price.times, price.values * 1000, price.end)}, **kwargs)
    assert first.start == scaled.start and first.score == pytest.approx(scaled.score)


@pytest.mark.parametrize(("kwargs", "message"), [
    (dict(duration=timedelta(0)), "duration of a job must be longer than 0"),
    (dict(latest_start=at(-1)), "latest start 2026-03-09T23:00:00+00:00 is before the earliest"),
    (dict(earliest=at(3.5), latest_start=at(4)), "does not cover a 1h job starting at 2026-03-10T03:30:00+00:00"),
    (dict(weights={"price": 1.0}), "weighs price, but no such series was given"),
    (dict(weights={"carbon": 0.0}), "must not all be 0"),
])
def test_bad_requests_are_schedule_errors(kwargs: dict, message: str):
    request = dict(duration=H, earliest=at(0), latest_start=at(2)) | kwargs
    with pytest.raises(ScheduleError, match=re.escape(message)):
        best_window(hourly(1, 2, 3, 4), **request)  # type: ignore[arg-type]


def test_objective_weights_name_what_is_wrong():
    assert objective_weights("carbon") == {"carbon": 1.0}
    with pytest.raises(ScheduleError, match="unknown objective 'water' in the mix"):
        objective_weights({"water": 1.0})
    with pytest.raises(ScheduleError, match="weight of price must be a finite number >= 0, got nan"):
        objective_weights({"price": float("nan")})


def test_steps_refuse_a_malformed_function():
    with pytest.raises(ValueError, match="increase strictly"):
        Steps([1.0, 1.0], [1.0, 2.0], 5.0)
    with pytest.raises(ValueError, match="finite"):
        Steps([1.0, 2.0], [1.0, float("inf")], 5.0)
    with pytest.raises(ValueError, match="as many times as values"):
        Steps([1.0, 2.0], [1.0], 5.0)
