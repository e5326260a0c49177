"""Streaming detectors: false alarms near the configured run length, bounded delays, ADWIN's shrinking window,
Siegmund's run lengths, and the common contract (repr, clone, pickle, warm-up, one-message parameter errors)."""

from __future__ import annotations

import inspect
import math
import pickle
import statistics

import numpy as np
import pytest

from mape.errors import InvalidParameterError
from mape.monitor.online import ADWIN, CUSUM, ONLINE_DETECTORS, OnlineDetector, PageHinkley, siegmund_arl
from mape.monitor.online.cusum import siegmund_threshold


def stream(seed: int, *, change: int = 2000, length: int = 3000, shift: float = 0.0, scale: float = 1.0) -> list[float]:
    """N(0, 1) values, then N(shift, scale²) from index ``change`` on."""
    rng = np.random.default_rng(seed)
    return np.concatenate([rng.normal(0.0, 1.0, change), rng.normal(shift, scale, length - change)]).tolist()


def detections(detector: OnlineDetector, values: list[float]) -> list[int]:
    return [i for i, x in enumerate(values) if detector.update(x).drift_detected]


def first_delay(detector: OnlineDetector, values: list[float], change: int) -> int | None:
    late = [i - change for i in detections(detector, values) if i >= change]
    return late[0] if late else None


# --- false alarms at the configured run length ---------------------------------------------------------------

@pytest.mark.parametrize("cls", [CUSUM, PageHinkley])
def test_false_alarms_per_10k_samples_are_near_the_configured_run_length(cls):
    seeds = range(30)
    alarms = sum(len(detections(cls.for_run_length(10_000), stream(seed, change=10_000, length=10_000)))
                 for seed in seeds)
    # Target: 1 per 10,000 in-control samples, 30 expected. With the 500-value warm-up (mean and sigma estimated,
    # and again after each alarm) the benchmark measures 1.08 (CUSUM) and 0.99 (Page-Hinkley) per 10k.
    assert 10 <= alarms <= 75


@pytest.mark.parametrize("cls", [CUSUM, PageHinkley])
def test_most_clean_streams_of_10k_see_no_alarm_at_a_run_length_of_100k(cls):
    quiet = sum(not detections(cls.for_run_length(100_000), stream(seed, change=10_000, length=10_000))
                for seed in range(20))
    # With known parameters, P(no alarm in 10k) = exp(-0.1) = 0.90; estimating them costs a little.
    assert quiet >= 15


def test_with_known_parameters_page_hinkley_is_the_cusum():
    values = stream(5, shift=0.7)
    known = {"mean": 0.0, "sigma": 1.0}

    assert detections(PageHinkley.for_run_length(5000, **known), values) == detections(
        CUSUM.for_run_length(5000, **known), values)


def test_adwin_at_a_run_length_of_10k_alarms_less_than_once_per_10k_samples():
    alarms = sum(len(detections(ADWIN.for_run_length(10_000), stream(seed, change=10_000, length=10_000)))
                 for seed in range(20))
    # The bound (delta = clock / arl0) is conservative: measured 0 in 1M samples.
    assert alarms <= 20


def test_adwin_alarms_more_often_with_a_larger_delta():
    def alarms(delta: float) -> int:
        return sum(len(detections(ADWIN(delta=delta), stream(seed, change=10_000, length=10_000)))
                   for seed in range(10))

    assert alarms(0.002) <= alarms(0.5)
    assert alarms(0.5) > 0


# --- detection delays ----------------------------------------------------------------------------------------

def test_cusum_detects_a_one_sigma_shift_within_100_samples():
    delays = [first_delay(CUSUM.for_run_length(10_000, shift=1.0, mean=0.0, sigma=1.0), stream(seed, shift=1.0),
                          2000) for seed in range(20)]

    assert all(d is not None and d < 100 for d in delays), delays
    # Siegmund's ARL1 from a CUSUM at zero is 16.4; at the change the sums are usually above zero.
    assert 8 <= statistics.fmean(delays) <= 20  # type: ignore[arg-type]


@pytest.mark.parametrize("cls", [CUSUM, PageHinkley])
@pytest.mark.parametrize("shift", [1.0, -1.0])
def test_a_one_sigma_shift_is_found_fast_with_estimated_parameters(cls, shift):
    delays = [first_delay(cls.for_run_length(10_000, shift=1.0), stream(seed, shift=shift), 2000)
              for seed in range(20)]

    assert None not in delays
    assert statistics.median(delays) < 30  # type: ignore[type-var]


@pytest.mark.parametrize("cls", [CUSUM, PageHinkley])
def test_one_sided_detectors_ignore_the_other_direction(cls):
    values = stream(1, shift=-3.0)

    assert not [i for i in detections(cls(direction="up", mean=0.0, sigma=1.0), values) if i >= 2000]
    assert detections(cls(direction="down", mean=0.0, sigma=1.0), values)


def test_adwin_detects_an_abrupt_change_and_shrinks_its_window():
    detector = ADWIN.for_run_length(10_000)
    values = stream(2, shift=1.0, length=3000)
    widths, found = [], []
    for i, x in enumerate(values):
        detector.update(x)
        widths.append(detector.width_)
        if detector.drift_detected:
            found.append(i)

    assert found and 2000 <= found[0] < 2100
    assert widths[found[0]] < widths[found[0] - 1] / 4  # the older part was dropped
    assert detector.width_ < 1000 + 200  # by the end, the window holds little from before the change
    assert detector.estimation_ == pytest.approx(1.0, abs=0.2)


def test_adwin_keeps_its_warm_up_values_and_a_growing_window_on_a_stable_stream():
    detector = ADWIN(grace_period=100)
    for x in stream(3, change=5000, length=5000):
        detector.update(x)

    assert detector.n_detections_ == 0
    assert detector.width_ == 5000
    assert detector.estimation_ == pytest.approx(0.0, abs=0.05)


# --- Siegmund's approximation --------------------------------------------------------------------------------

@pytest.mark.parametrize(("h", "table"), [(4.0, 168.0), (5.0, 465.0)])
def test_siegmund_matches_montgomerys_two_sided_table_for_k_one_half(h, table):
    assert siegmund_arl(0.5, h) == pytest.approx(table, rel=0.02)


@pytest.mark.parametrize("direction", ["both", "up", "down"])
def test_the_threshold_inverts_the_run_length(direction):
    h = siegmund_threshold(20_000, 0.25, direction)

    assert siegmund_arl(0.25, h, direction=direction) == pytest.approx(20_000, rel=1e-6)
    assert siegmund_arl(0.25, h, direction="both") <= siegmund_arl(0.25, h, direction="up")


def test_an_unreachable_run_length_is_refused():
    # Even h = 0 alarms after about 1.04 values on average (2.09 per side).
    with pytest.raises(InvalidParameterError) as caught:
        CUSUM.for_run_length(1.02)

    assert str(caught.value) == ("The 'arl0' parameter of CUSUM.for_run_length must be a float in (1.04, inf) "
                                 "for k=0.5. Got 1.02 instead.")


# --- restarts and warm-up ------------------------------------------------------------------------------------

@pytest.mark.parametrize("cls", [CUSUM, PageHinkley])
def test_after_a_detection_the_next_value_starts_a_new_warm_up(cls):
    detector = cls(grace_period=50)
    values = stream(4, change=300, length=600, shift=4.0)
    first = detections(detector.clone(), values)[0]
    for x in values[: first + 1]:
        detector.update(x)
    assert detector.drift_detected and detector.n_detections_ == 1

    detector.update(values[first + 1])

    assert not detector.drift_detected
    assert detector.warming_up and detector.mean_ is None
    assert (detector.upper_, detector.lower_) == (0.0, 0.0)


@pytest.mark.parametrize("cls", ONLINE_DETECTORS)
def test_nothing_is_detected_during_the_warm_up(cls):
    detector = cls(grace_period=200)
    values = [0.0, 1.0] * 50 + [1000.0] * 99

    assert detections(detector, values) == []
    assert detector.warming_up
    detector.update(1000.0)
    assert not detector.warming_up
    assert detector.mean_ == pytest.approx(statistics.fmean(values + [1000.0]))


@pytest.mark.parametrize("cls", ONLINE_DETECTORS)
def test_known_mean_and_sigma_skip_the_warm_up(cls):
    detector = cls(mean=10.0, sigma=2.0)

    assert not detector.warming_up
    assert (detector.mean_, detector.sigma_) == (10.0, 2.0)


@pytest.mark.parametrize("cls", ONLINE_DETECTORS)
def test_missing_values_are_skipped_and_counted(cls):
    detector = cls(grace_period=10)
    for x in [1.0, float("nan"), 2.0, float("inf"), 3.0]:
        assert detector.update(x) is detector

    assert (detector.n_seen_, detector.n_missing_) == (3, 2)


# --- the common contract -------------------------------------------------------------------------------------

@pytest.mark.parametrize("cls", ONLINE_DETECTORS)
def test_parameters_are_keyword_only_and_repr_shows_changed_ones(cls):
    signature = inspect.signature(cls.__init__)

    assert all(p.kind is p.KEYWORD_ONLY for name, p in signature.parameters.items() if name != "self")
    assert repr(cls()) == f"{cls.__name__}()"
    assert repr(cls(grace_period=50, sigma=2.0)) == f"{cls.__name__}(grace_period=50, sigma=2.0)"


@pytest.mark.parametrize("cls", ONLINE_DETECTORS)
def test_clone_has_equal_parameters_and_no_state(cls):
    detector = cls.for_run_length(1000)
    for x in stream(0, change=700, length=700):
        detector.update(x)

    twin = detector.clone()

    assert twin.get_params() == detector.get_params()
    assert (twin.n_seen_, detector.n_seen_) == (0, 700)
    assert twin.warming_up


@pytest.mark.parametrize("cls", ONLINE_DETECTORS)
def test_a_pickled_detector_goes_on_as_the_original(cls):
    values = stream(6, shift=1.5)
    detector = cls.for_run_length(5000)
    for x in values[:1500]:
        detector.update(x)

    restored = pickle.loads(pickle.dumps(detector))

    assert detections(restored, values[1500:]) == detections(detector, values[1500:])
    assert restored.n_detections_ >= 1
    assert repr(restored) == repr(detector)


@pytest.mark.parametrize("cls", ONLINE_DETECTORS)
def test_reset_forgets_the_stream(cls):
    detector = cls(grace_period=20)
    for x in stream(7, change=100, length=100):
        detector.update(x)

    assert detector.reset() is detector
    assert (detector.n_seen_, detector.n_detections_, detector.warming_up) == (0, 0, True)


@pytest.mark.parametrize(("cls", "name", "value", "expected"), [
    (CUSUM, "k", -0.1, "a float in [0, inf)"),
    (CUSUM, "h", 0, "a float in (0, inf)"),
    (CUSUM, "direction", "left", "a str among {'both', 'up', 'down'}"),
    (PageHinkley, "threshold", math.nan, "a float in (0, inf)"),
    (PageHinkley, "delta", "0.5", "a float in [0, inf)"),
    (ADWIN, "delta", 1.0, "a float in (0, 1)"),
    (ADWIN, "clock", 0, "an int in [1, inf)"),
    (ADWIN, "max_buckets", 1, "an int in [2, inf)"),
    (ADWIN, "min_window_length", 2.0, "an int in [1, inf)"),
    (CUSUM, "grace_period", 1, "an int in [2, inf)"),
    (PageHinkley, "sigma", 0.0, "None or a finite float in (0, inf)"),
    (ADWIN, "mean", math.inf, "None or a finite float"),
    (CUSUM, "sigma", math.inf, "None or a finite float in (0, inf)"),
])
def test_invalid_parameters_have_the_one_message_shape(cls, name, value, expected):
    with pytest.raises(InvalidParameterError) as caught:
        cls(**{name: value})

    assert str(caught.value) == f"The {name!r} parameter of {cls.__name__} must be {expected}. Got {value!r} instead."


@pytest.mark.parametrize(("call", "message"), [
    (lambda: CUSUM.for_run_length(0.5), "The 'arl0' parameter of CUSUM.for_run_length must be a float in (1, inf). "
                                        "Got 0.5 instead."),
    (lambda: PageHinkley.for_run_length(1000, shift=0), "The 'shift' parameter of PageHinkley.for_run_length must "
                                                        "be a float in (0, inf). Got 0 instead."),
    (lambda: ADWIN.for_run_length(20), "The 'arl0' parameter of ADWIN.for_run_length must be a float in (32, inf). "
                                       "Got 20 instead."),
])
def test_invalid_run_lengths_have_the_one_message_shape(call, message):
    with pytest.raises(InvalidParameterError) as caught:
        call()

    assert str(caught.value) == message
