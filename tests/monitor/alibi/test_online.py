"""alibi-detect's online MMD and LSDD behind MultivariateOnlineDetector: update rows, read drift_detected."""

from __future__ import annotations

import inspect
import pickle

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("alibi_detect")

import torch  # noqa: E402
from alibi_detect.cd import LSDDDriftOnline, MMDDriftOnline  # noqa: E402

from mape.errors import InvalidParameterError, NotFittedError  # noqa: E402
from mape.monitor.detectors.alibi import ALIBI_ONLINE_DETECTORS, AlibiLSDDOnline, AlibiMMDOnline  # noqa: E402
from mape.monitor.online import MultivariateOnlineDetector  # noqa: E402

pytestmark = pytest.mark.alibi

#: Small enough to configure in a second or two: thresholds for a run length of 50 from 600 bootstraps.
SMALL = {"arl0": 50, "window_size": 10, "n_bootstraps": 600}


def stream(seed: int, *, change: int, length: int, shift: float = 0.0, d: int = 3) -> np.ndarray:
    rng = np.random.default_rng(seed)
    rows = rng.normal(size=(length, d))
    rows[change:] += shift
    return rows


def detections(detector: MultivariateOnlineDetector, rows: np.ndarray) -> list[int]:
    return [i for i, row in enumerate(rows) if detector.update(row).drift_detected]


@pytest.fixture(scope="module", params=ALIBI_ONLINE_DETECTORS, ids=lambda cls: cls.__name__)
def fitted(request):
    """One fitted detector per class (configuring thresholds is the slow part), reset by each test."""
    return request.param(**SMALL).fit(np.random.default_rng(0).normal(size=(400, 3)))


def test_a_one_and_a_half_sigma_shift_in_every_feature_is_found_within_a_window(fitted):
    fitted.reset()

    found = detections(fitted, stream(1, change=30, length=80, shift=1.5))

    assert found and 30 <= found[0] < 30 + SMALL["window_size"]
    assert fitted.n_detections_ == len(found) and fitted.n_seen_ == 80
    assert fitted.test_stat_ == fitted.test_stat_ and fitted.threshold_ > 0


def test_a_clean_stream_alarms_about_once_per_arl0_updates(fitted):
    fitted.reset()

    alarms = len(detections(fitted, stream(2, change=2000, length=1000)))

    # about 1000 / 50 = 20 expected (the first window counts from t = 0); a detector blind to its run length
    # alarms every update or never
    assert 5 <= alarms <= 45


def test_after_a_detection_the_next_update_starts_afresh(fitted):
    fitted.reset()
    rows = stream(3, change=0, length=40, shift=3.0)

    found = detections(fitted, rows)

    # every restart refills the window from the shifted rows: detections come again, a window apart at most
    assert len(found) >= 2
    assert all(later - earlier <= SMALL["window_size"] for earlier, later in zip(found, found[1:]))


def test_updates_equal_alibi_predict_called_directly():
    reference = np.random.default_rng(4).normal(size=(300, 3)).astype(np.float32)
    rows = stream(5, change=20, length=40, shift=1.0).astype(np.float32)
    for ours, theirs, options in [(AlibiMMDOnline, MMDDriftOnline, {"standardize": False}),
                                  (AlibiLSDDOnline, LSDDDriftOnline, {})]:
        torch.manual_seed(0)
        direct = theirs(reference, ert=50, window_size=10, backend="pytorch", n_bootstraps=600, device="cpu",
                        verbose=False)
        expected = []
        for row in rows:
            data = direct.predict(row)["data"]
            expected.append((bool(data["is_drift"]), data["test_stat"], data["threshold"]))
            if data["is_drift"]:
                direct.reset_state()
        detector = ours(**SMALL, **options).fit(reference)

        got = [(detector.update(row).drift_detected, detector.test_stat_, detector.threshold_) for row in rows]

        assert got == expected


@pytest.mark.parametrize("cls", ALIBI_ONLINE_DETECTORS)
def test_a_pickled_detector_goes_on_as_the_original(cls):
    rows = stream(6, change=25, length=50, shift=1.0)
    detector = cls(**SMALL).fit(np.random.default_rng(7).normal(size=(300, 3)))
    for row in rows[:23]:
        detector.update(row)

    restored = pickle.loads(pickle.dumps(detector))

    assert detections(restored, rows[23:]) == detections(detector, rows[23:])
    assert restored.n_seen_ == detector.n_seen_ == 50


def test_missing_rows_are_skipped_and_rows_are_read_by_feature_name():
    reference = pd.DataFrame(np.random.default_rng(8).normal(size=(300, 2)), columns=["a", "b"])
    detector = AlibiMMDOnline(**SMALL).fit(reference)

    detector.update({"b": 0.1, "a": -0.2}).update(pd.Series({"a": np.nan, "b": 1.0})).update([0.0, 0.5])

    assert (detector.n_seen_, detector.n_missing_) == (2, 1)
    with pytest.raises(ValueError, match=r"lacks the reference's features \['b'\]"):
        detector.update({"a": 1.0})
    with pytest.raises(ValueError, match="fitted on 2 features; the row has 3"):
        detector.update([1.0, 2.0, 3.0])


@pytest.mark.parametrize("cls", ALIBI_ONLINE_DETECTORS)
def test_the_common_contract(cls):
    signature = inspect.signature(cls.__init__)
    assert all(p.kind is p.KEYWORD_ONLY for name, p in signature.parameters.items() if name != "self")
    assert repr(cls()) == f"{cls.__name__}()"
    assert repr(cls.for_run_length(500)) == f"{cls.__name__}(arl0=500)"
    assert cls(window_size=5).clone().get_params() == cls(window_size=5).get_params()
    with pytest.raises(NotFittedError):
        cls().update([1.0, 2.0])
    with pytest.raises(InvalidParameterError, match=rf"The 'arl0' parameter of {cls.__name__} must be a float in "
                                                    r"\(1, inf\)\. Got 0\.5 instead\."):
        cls(arl0=0.5)
    with pytest.raises(ValueError, match="needs at least"):
        cls(**SMALL).fit(np.zeros((20, 2)))
