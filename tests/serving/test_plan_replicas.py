"""plan_replicas clamps to the bounds, limits each step, and holds scale-downs inside the stabilization window."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from pydantic import ValidationError

from mape.errors import InvalidParameterError
from mape.serving.target import ScaleBounds, plan_replicas

T0 = datetime(2026, 1, 5, 12, 0, tzinfo=timezone.utc)


def bounds(**kwargs: object) -> ScaleBounds:
    return ScaleBounds(**{"min_replicas": 1, "max_replicas": 4, "max_step": 10, **kwargs})


@pytest.mark.parametrize(("current", "requested", "target", "limited_by"), [
    (2, 9, 4, "max_replicas"),
    (2, 0, 1, "min_replicas"),
    (2, 3, 3, None),
    (2, 2, 2, None),
])
def test_the_request_is_clamped_to_min_and_max(current: int, requested: int, target: int,
                                               limited_by: str | None) -> None:
    step = plan_replicas(current, requested, bounds(), last_scale_up_at=None, at=T0)

    assert (step.current, step.requested, step.target, step.limited_by) == (current, requested, target, limited_by)
    assert step.changes is (target != current)


def test_clamping_names_the_bound_in_the_reason() -> None:
    step = plan_replicas(2, 9, bounds(), last_scale_up_at=None, at=T0)

    assert step.reason == "scale up from 2 to 4 replicas; requested 9, above max_replicas 4"
    assert str(step) == step.reason


def test_max_step_limits_the_change_in_both_directions() -> None:
    limits = bounds(max_replicas=10, max_step=2)

    up = plan_replicas(1, 8, limits, last_scale_up_at=None, at=T0)
    down = plan_replicas(8, 1, limits, last_scale_up_at=None, at=T0)

    assert (up.target, up.limited_by) == (3, "max_step")
    assert (down.target, down.limited_by) == (6, "max_step")
    assert "at most 2 replicas per step (max_step)" in down.reason


def test_a_scale_down_inside_the_window_is_refused_and_names_when_it_is_allowed() -> None:
    limits = bounds(scale_down_stabilization="5m")

    step = plan_replicas(3, 1, limits, last_scale_up_at=T0, at=T0 + timedelta(minutes=4, seconds=59))

    assert (step.target, step.limited_by, step.changes) == (3, "stabilization", False)
    assert "refused" in step.reason
    assert "allowed from 2026-01-05T12:05:00Z" in step.reason


def test_a_scale_down_is_allowed_once_the_window_has_passed() -> None:
    limits = bounds(scale_down_stabilization="300s", max_step=1)

    step = plan_replicas(3, 1, limits, last_scale_up_at=T0, at=T0 + timedelta(minutes=5))

    assert (step.target, step.limited_by) == (2, "max_step")


def test_a_scale_up_is_never_stabilized() -> None:
    limits = bounds(scale_down_stabilization="1h")

    step = plan_replicas(2, 3, limits, last_scale_up_at=T0, at=T0 + timedelta(seconds=1))

    assert (step.target, step.limited_by) == (3, None)


def test_a_count_above_max_comes_down_to_max_even_inside_the_window() -> None:
    limits = bounds(max_replicas=2, scale_down_stabilization="1h")

    step = plan_replicas(4, 1, limits, last_scale_up_at=T0, at=T0 + timedelta(minutes=1))

    assert (step.target, step.limited_by) == (2, "stabilization")


def test_naive_times_are_taken_as_utc() -> None:
    step = plan_replicas(3, 2, bounds(), last_scale_up_at=T0.replace(tzinfo=None), at=T0 + timedelta(minutes=1))

    assert step.limited_by == "stabilization"


def test_min_above_max_is_refused_naming_both_values() -> None:
    with pytest.raises(ValidationError, match=r"min_replicas \(5\) must not exceed max_replicas \(2\)"):
        ScaleBounds(min_replicas=5, max_replicas=2)


@pytest.mark.parametrize("value", ["5m", "300s", 300, timedelta(minutes=5)])
def test_the_window_accepts_durations_as_the_config_does(value: object) -> None:
    assert ScaleBounds(scale_down_stabilization=value).scale_down_stabilization == timedelta(minutes=5)


@pytest.mark.parametrize("fields", [{"scale_down_stabilization": "soon"}, {"max_step": 0}, {"min_replicas": -1},
                                    {"replicas": 3}])
def test_bad_bounds_are_refused(fields: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        ScaleBounds(**fields)


def test_a_negative_count_is_refused_in_the_shared_message_shape() -> None:
    expected = r"The 'requested' parameter of plan_replicas must be an int >= 0\. Got -1 instead\."
    with pytest.raises(InvalidParameterError, match=expected):
        plan_replicas(1, -1, bounds(), last_scale_up_at=None, at=T0)
