"""Every detector honours the common contract: repr, clone, pickling, determinism, calm on clean data."""

from __future__ import annotations

import importlib
import inspect
import pickle
import pkgutil

import numpy as np
import pytest

import mape.monitor.detectors as detectors_package
from mape.errors import InvalidParameterError, NotFittedError
from mape.monitor.detectors import DETECTORS, Detector, DetectorResult
from mape.monitor.detectors.alibi import ALIBI_DETECTORS

CATEGORIES = np.array(["a", "b", "c", "d"], dtype=object)


def sample(detector_class: type[Detector], rng: np.random.Generator, size: int) -> np.ndarray:
    """A clean sample of the kind of data the detector tests (the same distribution on every call)."""
    if detector_class.kind == "numeric":
        return rng.normal(10.0, 2.0, size=size)
    return rng.choice(CATEGORIES, size=size, p=[0.4, 0.3, 0.2, 0.1])


def test_every_detector_class_is_registered():
    # the alibi-detect backend's wrappers are registered apart (and checked by tests/monitor/alibi/test_contract.py):
    # their modules import without alibi-detect, which they import only at fit
    for module in pkgutil.walk_packages(detectors_package.__path__, prefix=f"{detectors_package.__name__}."):
        importlib.import_module(module.name)

    def concrete(cls: type) -> set[type]:
        found = set()
        for sub in cls.__subclasses__():
            if not inspect.isabstract(sub):
                found.add(sub)
            found |= concrete(sub)
        return found

    assert concrete(Detector) == set(DETECTORS) | set(ALIBI_DETECTORS)


@pytest.mark.parametrize("cls", DETECTORS)
def test_parameters_are_keyword_only_and_repr_shows_changed_ones(cls):
    signature = inspect.signature(cls.__init__)
    assert all(p.kind is p.KEYWORD_ONLY for name, p in signature.parameters.items() if name != "self")
    assert repr(cls()) == f"{cls.__name__}()"
    assert repr(cls(alpha=0.01)) == f"{cls.__name__}(alpha=0.01)"
    assert cls(alpha=0.01).get_params()["alpha"] == 0.01


@pytest.mark.parametrize("cls", DETECTORS)
def test_clone_is_unfitted_with_equal_params(cls):
    detector = cls(alpha=0.02).fit(sample(cls, np.random.default_rng(0), 300))
    twin = detector.clone()

    assert twin is not detector
    assert type(twin) is cls
    assert twin.get_params() == detector.get_params()
    with pytest.raises(NotFittedError):
        twin.score(sample(cls, np.random.default_rng(1), 50))


@pytest.mark.parametrize("cls", DETECTORS)
def test_fit_returns_self_sets_underscore_state_and_keeps_params(cls):
    detector = cls()
    params = detector.get_params()
    before = set(vars(detector))

    assert detector.fit(sample(cls, np.random.default_rng(0), 200)) is detector

    added = set(vars(detector)) - before
    assert added and all(name.endswith("_") for name in added)
    assert detector.get_params() == params


@pytest.mark.parametrize("cls", DETECTORS)
def test_pickled_detector_scores_the_same(cls):
    detector = cls().fit(sample(cls, np.random.default_rng(0), 400))
    current = sample(cls, np.random.default_rng(1), 150)

    restored = pickle.loads(pickle.dumps(detector))

    assert restored.score(current) == detector.score(current)
    assert repr(restored) == repr(detector)


@pytest.mark.parametrize("cls", DETECTORS)
def test_seeded_runs_are_deterministic(cls):
    def run(seed: int) -> DetectorResult:
        rng = np.random.default_rng(seed)
        return cls().fit(sample(cls, rng, 500)).score(sample(cls, rng, 200))

    assert run(11) == run(11)
    assert run(11) != run(12)


@pytest.mark.parametrize("cls", DETECTORS)
def test_clean_streams_alarm_at_about_alpha(cls):
    rng = np.random.default_rng(2026)
    alarms = 0
    repetitions = 200
    for _ in range(repetitions):
        result = cls(alpha=0.05).fit(sample(cls, rng, 500)).score(sample(cls, rng, 300))
        assert 0.0 <= result.p_value <= 1.0
        alarms += result.drift_detected
    # Binomial(200, 0.05): mean 10, sd 3.1. A test that ignores its data fails one of these bounds.
    assert 1 <= alarms <= 20


@pytest.mark.parametrize("cls", DETECTORS)
def test_score_before_fit_raises_not_fitted(cls):
    with pytest.raises(NotFittedError, match=f"This {cls.__name__} instance is not fitted yet"):
        cls().score(sample(cls, np.random.default_rng(0), 10))


@pytest.mark.parametrize("cls", DETECTORS)
@pytest.mark.parametrize("bad", [1.5, 0.0, -0.1, "0.05", True, float("nan")])
def test_invalid_alpha_has_the_one_message_shape(cls, bad):
    with pytest.raises(InvalidParameterError) as caught:
        cls(alpha=bad)
    assert str(caught.value) == f"The 'alpha' parameter of {cls.__name__} must be a float in (0, 1). Got {bad!r} instead."
    assert isinstance(caught.value, ValueError)


@pytest.mark.parametrize("cls", DETECTORS)
def test_missing_values_are_dropped_and_counted(cls):
    rng = np.random.default_rng(5)
    reference = sample(cls, rng, 300).astype(object)
    current = sample(cls, rng, 100).astype(object)
    reference[:7] = None
    current[:3] = np.nan

    result = cls().fit(reference).score(current)

    assert (result.n_reference, result.n_missing_reference) == (293, 7)
    assert (result.n_current, result.n_missing_current) == (97, 3)
    assert not np.isnan(result.p_value)


@pytest.mark.parametrize("cls", DETECTORS)
def test_an_empty_current_sample_gives_no_verdict(cls):
    result = cls().fit(sample(cls, np.random.default_rng(0), 100)).score(np.array([], dtype=object))

    assert np.isnan(result.p_value) and np.isnan(result.statistic)
    assert result.drift_detected is False
    assert result.n_current == 0
