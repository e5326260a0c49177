"""KS and chi-squared detectors find real shifts and agree with scipy's reference implementations."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from mape.monitor.detectors import ChiSquareDetector, KSDetector


@pytest.mark.parametrize(("n", "m", "method"), [
    (300, 200, "auto"), (300, 200, "exact"), (300, 200, "asymp"),
    (2000, 2000, "auto"), (2000, 2000, "exact"), (2000, 2000, "asymp"),
    (12_000, 3_000, "auto"), (12_000, 3_000, "asymp"),  # auto is asymptotic beyond 10,000 rows
])
def test_ks_matches_scipy(n, m, method):
    rng = np.random.default_rng(n + m)
    reference, current = rng.normal(size=n), rng.normal(0.05, 1.0, size=m)

    ours = KSDetector(method=method).fit(reference).score(current)
    theirs = stats.ks_2samp(reference, current, method=method)

    assert ours.statistic == pytest.approx(theirs.statistic, abs=1e-12)
    assert ours.p_value == pytest.approx(theirs.pvalue, rel=1e-9, abs=1e-15)


def test_ks_detects_a_half_sigma_location_shift():
    rng = np.random.default_rng(1)
    detector = KSDetector(alpha=0.01).fit(rng.normal(size=1000))

    clean = detector.score(rng.normal(size=1000))
    shifted = detector.score(rng.normal(0.5, 1.0, size=1000))

    assert not clean.drift_detected
    assert shifted.drift_detected
    assert shifted.p_value < 1e-10
    assert shifted.statistic > 0.15


def test_ks_detects_a_change_of_spread_with_the_same_mean():
    rng = np.random.default_rng(2)
    detector = KSDetector().fit(rng.normal(0.0, 1.0, size=2000))

    assert detector.score(rng.normal(0.0, 1.6, size=2000)).p_value < 1e-6


def test_ks_large_samples_use_the_fast_asymptotic_path():
    rng = np.random.default_rng(3)
    reference, current = rng.normal(size=50_000), rng.normal(0.02, 1.0, size=20_000)

    result = KSDetector().fit(reference).score(current)

    assert result.statistic == pytest.approx(stats.ks_2samp(reference, current).statistic, abs=1e-12)
    assert (result.n_reference, result.n_current) == (50_000, 20_000)


def test_chi2_matches_scipy_on_a_hand_built_table():
    reference = ["a"] * 50 + ["b"] * 30 + ["c"] * 20
    current = ["a"] * 20 + ["b"] * 20 + ["c"] * 10 + ["d"] * 10  # "d" is new

    result = ChiSquareDetector().fit(reference).score(current)
    expected = stats.chi2_contingency([[50, 30, 20, 0], [20, 20, 10, 10]], correction=False)

    assert result.statistic == pytest.approx(expected.statistic)
    assert result.p_value == pytest.approx(expected.pvalue)
    assert result.drift_detected


def test_chi2_detects_a_shift_in_category_frequencies():
    rng = np.random.default_rng(4)
    categories = ["web", "ios", "android"]
    detector = ChiSquareDetector(alpha=0.01).fit(rng.choice(categories, 3000, p=[0.5, 0.25, 0.25]))

    assert not detector.score(rng.choice(categories, 1000, p=[0.5, 0.25, 0.25])).drift_detected
    assert detector.score(rng.choice(categories, 1000, p=[0.35, 0.325, 0.325])).drift_detected


def test_chi2_counts_an_unseen_category_as_drift():
    reference = ["x"] * 500 + ["y"] * 500
    current = ["x"] * 45 + ["y"] * 45 + ["z"] * 10

    result = ChiSquareDetector(alpha=0.01).fit(reference).score(current)

    assert result.drift_detected
    assert result.p_value < 1e-10


def test_chi2_with_a_single_category_everywhere_sees_no_drift():
    result = ChiSquareDetector().fit(["only"] * 30).score(["only"] * 10)

    assert (result.statistic, result.p_value, result.drift_detected) == (0.0, 1.0, False)


@pytest.mark.parametrize("shift", [0.0, 0.01, 0.02, 0.04])
def test_ks_on_large_windows_keeps_scipys_p_value_where_it_sums_smirnov_terms(shift):
    # effective size 75,000: for p below about 0.025 scipy sums the one-sided Smirnov series term by term
    # (time linear in the size); the detector uses Maag and Dicaire's closed form there.
    rng = np.random.default_rng(int(shift * 1000))
    reference, current = rng.normal(size=150_000), rng.normal(shift, 1.0, size=150_000)

    ours = KSDetector().fit(reference).score(current)
    theirs = stats.ks_2samp(reference, current, method="asymp")

    assert ours.statistic == pytest.approx(theirs.statistic, abs=1e-12)
    assert ours.p_value == pytest.approx(theirs.pvalue, rel=5e-3, abs=3e-6)
