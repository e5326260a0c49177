"""A signal that crosses its threshold on every tick: cooldowns, rate limits and hysteresis keep the loop from flapping.

The short version of ``benchmarks/oscillation.py`` (same code, fewer ticks):
5-minute ticks, drift share alternating 0.9 / 0.1, a retrain policy (cooldown
6h, at most 3 per 24h) against a rollback policy (cooldown 6h), real Planner
and Analyzer on SQLite.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from benchmarks.oscillation import START, VARIANTS, allowed, flip_flops, simulate

RETRAIN, ROLLBACK = "retrain-on-signal", "rollback-on-signal"
VARIANT = {v.name: v for v in VARIANTS}
HOUR = timedelta(hours=1)


def test_the_policies_act_exactly_as_often_as_cooldown_and_rate_limit_allow_and_never_flip_flop(tmp_path: Path):
    # 220 ticks: 18h15m, so the retrain at 18h is the fourth within 24h and the rate limit stops it
    result = simulate(VARIANT["raw"], 220, tmp_path)
    assert result["acting_decisions"] == result["bound"] == {RETRAIN: 3, ROLLBACK: 4}  # 0, 6, 12h; 0:05 ... 18:05
    assert result["condition_held_ticks"] == {RETRAIN: 110, ROLLBACK: 110}
    assert result["a_b_a_within_cooldown"] == 0
    # per-action cooldowns let the opposite action follow at once: retrain, rollback five minutes later, and back
    assert result["a_b_reversals_within_cooldown"] == 5  # R0 B0:05 R6:00 B6:05 R12:00 B12:05 (B18:05)


def test_the_rate_limit_is_what_holds_back_the_fourth_retrain():
    spec = VARIANT["raw"].policies()[0].policy.spec
    times = [START + k * timedelta(minutes=10) for k in range(110)]
    assert allowed(spec, times) == 3
    assert allowed(spec.model_copy(update={"rate_limit": None}), times) == 4


def test_never_with_stops_the_reversals(tmp_path: Path):
    result = simulate(VARIANT["exclusions"], 150, tmp_path)
    assert result["a_b_reversals_within_cooldown"] == result["a_b_a_within_cooldown"] == 0
    assert result["acting_decisions"] == {RETRAIN: 3, ROLLBACK: 0}  # 0, 6h, 12h: each retrain excludes the rollback
    assert result["within_bound"]


@pytest.mark.parametrize(("name", "opened", "closed", "acting"), [
    ("symptom-flapping", 75, 75, {RETRAIN: 3, ROLLBACK: 3}),
    ("symptom-hysteresis", 1, 0, {RETRAIN: 3, ROLLBACK: 0}),
])
def test_hysteresis_opens_the_symptom_once_where_a_single_threshold_flaps(tmp_path: Path, name: str, opened: int,
                                                                          closed: int, acting: dict[str, int]):
    result = simulate(VARIANT[name], 150, tmp_path)
    assert (result["symptom"]["opened"], result["symptom"]["closed"]) == (opened, closed)
    assert result["acting_decisions"] == acting
    assert result["within_bound"] and result["a_b_a_within_cooldown"] == 0


def test_a_flip_flop_is_counted_only_inside_the_first_actions_cooldown():
    cooldown = {"retrain": 6 * HOUR, "rollback": 6 * HOUR}
    inside = [(START, "retrain"), (START + HOUR, "rollback"), (START + 5 * HOUR, "retrain")]
    outside = [(START, "retrain"), (START + HOUR, "rollback"), (START + 6 * HOUR, "retrain")]
    assert flip_flops(inside, cooldown) == (1, 2)
    assert flip_flops(outside, cooldown) == (0, 2)
    assert flip_flops([(START, "retrain"), (START + 7 * HOUR, "rollback")], cooldown) == (0, 0)
