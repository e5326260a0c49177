"""The univariate wrappers give alibi-detect's own p-values, agree with the built-in tests, and find real shifts."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("alibi_detect")

from alibi_detect.cd import ChiSquareDrift, CVMDrift, KSDrift  # noqa: E402

from mape.monitor.detectors import ChiSquareDetector, CVMDetector, KSDetector  # noqa: E402
from mape.monitor.detectors.alibi import AlibiChiSquareDetector, AlibiCVMDetector, AlibiKSDetector  # noqa: E402

pytestmark = pytest.mark.alibi

NUMERIC = [(AlibiKSDetector, KSDrift, KSDetector), (AlibiCVMDetector, CVMDrift, CVMDetector)]


def direct(alibi_class, reference: np.ndarray, current: np.ndarray) -> tuple[float, float]:
    """alibi-detect's feature-level p-value and statistic, called as its documentation shows."""
    detector = alibi_class(reference.reshape(-1, 1), p_val=0.05, correction="none")
    data = detector.predict(current.reshape(-1, 1), drift_type="feature")["data"]
    return float(data["p_val"][0]), float(data["distance"][0])


@pytest.mark.parametrize(("ours", "theirs", "builtin"), NUMERIC)
@pytest.mark.parametrize("shift", [0.0, 0.1, 0.3])
def test_numeric_p_values_equal_alibi_called_directly(ours, theirs, builtin, shift):
    rng = np.random.default_rng(11)
    reference, current = rng.normal(size=1500), rng.normal(shift, 1.0, size=700)

    result = ours().fit(reference).score(current)

    assert (result.p_value, result.statistic) == direct(theirs, reference, current)


def test_ks_agrees_with_the_builtin_asymptotic_ks_to_float32_and_with_the_exact_one_closely():
    rng = np.random.default_rng(4)
    for size, shift in [(300, 0.0), (800, 0.15), (5000, 0.05), (20_000, 0.03)]:
        reference, current = rng.normal(size=size), rng.normal(shift, 1.0, size=size // 2)
        ours = AlibiKSDetector().fit(reference).score(current)
        asymptotic = KSDetector(method="asymp").fit(reference).score(current)
        default = KSDetector().fit(reference).score(current)

        assert ours.p_value == pytest.approx(asymptotic.p_value, rel=1e-5, abs=1e-12)
        assert ours.statistic == pytest.approx(asymptotic.statistic, rel=1e-6)
        # exact below 10,000 rows: the asymptotic p-value is a few percent off, the verdict the same
        assert ours.p_value == pytest.approx(default.p_value, rel=0.1, abs=0.01)
        assert (ours.effect_size, ours.effect_name) == (default.effect_size, default.effect_name)


def test_cvm_agrees_with_the_builtin_cvm_to_float32():
    rng = np.random.default_rng(5)
    for size, scale in [(30, 1.0), (400, 1.0), (2000, 1.2), (8000, 1.05)]:
        reference, current = rng.normal(size=size), rng.normal(0.0, scale, size=size // 2)
        ours = AlibiCVMDetector(effect="psi").fit(reference).score(current)
        builtin = CVMDetector(effect="psi").fit(reference).score(current)

        assert ours.p_value == pytest.approx(builtin.p_value, rel=1e-5, abs=1e-12)
        assert ours.statistic == pytest.approx(builtin.statistic, rel=1e-5)
        assert (ours.effect_size, ours.effect_name) == (builtin.effect_size, "psi")


def test_chi_square_equals_alibi_and_the_builtin_test_with_yates_correction():
    rng = np.random.default_rng(6)
    colours = np.array(["red", "green", "blue"], dtype=object)
    reference = rng.choice(colours, size=1200, p=[0.5, 0.3, 0.2])
    for current in (rng.choice(colours, size=500, p=[0.5, 0.3, 0.2]),
                    rng.choice(colours, size=500, p=[0.45, 0.3, 0.25]),
                    rng.choice(np.array([*colours, "purple"], dtype=object), size=500, p=[0.4, 0.3, 0.2, 0.1])):
        ours = AlibiChiSquareDetector().fit(reference).score(current)
        builtin = ChiSquareDetector().fit(reference).score(current)

        assert ours.p_value == pytest.approx(builtin.p_value, rel=1e-5, abs=1e-30)
        assert ours.statistic == pytest.approx(builtin.statistic, rel=1e-5)
        assert (ours.effect_size, ours.effect_name) == (builtin.effect_size, "js")

    # two categories: alibi-detect applies Yates' continuity correction, as ChiSquareDetector(correction=True)
    binary = rng.choice(np.array(["yes", "no"], dtype=object), size=800, p=[0.6, 0.4])
    current = rng.choice(np.array(["yes", "no"], dtype=object), size=300, p=[0.55, 0.45])
    ours = AlibiChiSquareDetector().fit(binary).score(current)
    yates = ChiSquareDetector(correction=True).fit(binary).score(current)
    assert ours.p_value == pytest.approx(yates.p_value, rel=1e-5)
    assert ours.p_value != pytest.approx(ChiSquareDetector().fit(binary).score(current).p_value, rel=1e-3)


def test_chi_square_codes_categories_as_alibi_expects_and_gets_alibis_p_value():
    reference = np.array(["a"] * 50 + ["b"] * 30 + ["c"] * 20, dtype=object)
    current = np.array(["a"] * 20 + ["b"] * 20 + ["d"] * 10, dtype=object)  # "c" gone, "d" new
    codes_reference = np.array([0] * 50 + [1] * 30 + [2] * 20).reshape(-1, 1)
    codes_current = np.array([0] * 20 + [1] * 20 + [3] * 10).reshape(-1, 1)
    detector = ChiSquareDrift(codes_reference, p_val=0.05, correction="none")
    expected = detector.predict(codes_current, drift_type="feature")["data"]

    result = AlibiChiSquareDetector().fit(reference).score(current)

    assert (result.p_value, result.statistic) == (float(expected["p_val"][0]), float(expected["distance"][0]))
    assert result.drift_detected


@pytest.mark.parametrize("cls", [AlibiKSDetector, AlibiCVMDetector])
def test_numeric_wrappers_find_a_half_sigma_shift_and_stay_quiet_on_clean_data(cls):
    rng = np.random.default_rng(8)
    detector = cls(alpha=0.01).fit(rng.normal(size=3000))

    shifted = detector.score(rng.normal(0.5, 1.0, size=1000))
    clean = [detector.score(rng.normal(size=1000)).drift_detected for _ in range(50)]

    assert shifted.drift_detected and shifted.p_value < 1e-6  # scipy's CVM p-value bottoms out near 1e-8
    assert shifted.effect_size == pytest.approx(0.5, abs=0.1)
    assert sum(clean) <= 4  # Binomial(50, 0.01): P(> 4) < 1e-4


def test_chi_square_finds_a_changed_mix_and_stays_quiet_on_the_same_mix():
    rng = np.random.default_rng(9)
    categories = np.array(list("abcde"), dtype=object)
    p = [0.4, 0.25, 0.15, 0.12, 0.08]
    detector = AlibiChiSquareDetector(alpha=0.01).fit(rng.choice(categories, size=3000, p=p))

    changed = detector.score(rng.choice(categories, size=1000, p=[0.3, 0.25, 0.15, 0.15, 0.15]))
    clean = [detector.score(rng.choice(categories, size=1000, p=p)).drift_detected for _ in range(50)]

    assert changed.drift_detected and changed.effect_size > 0.05
    assert sum(clean) <= 4


def test_an_all_missing_reference_gives_no_verdict_without_an_alibi_detector():
    detector = AlibiKSDetector().fit(np.array([np.nan, np.nan]))

    result = detector.score(np.array([1.0, 2.0]))

    assert detector.alibi_detector_ is None
    assert np.isnan(result.p_value) and result.drift_detected is False
    assert (result.n_reference, result.n_missing_reference) == (0, 2)
