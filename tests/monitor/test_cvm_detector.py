"""CVMDetector agrees with scipy's Cramér-von Mises test, small samples and large, and finds changes of shape."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from mape.monitor.detectors import CVMDetector, KSDetector
from mape.monitor.detectors.cvm import SCIPY_MAX_N, cvm_limit_cdf


@pytest.mark.parametrize(("n", "m", "method"), [
    (8, 6, "auto"),  # exact null distribution (both samples at most 20)
    (15, 20, "auto"),
    (15, 20, "asymptotic"),
    (300, 200, "auto"),
    (2000, 1500, "auto"),
    (10_000, 4000, "auto"),  # the largest size scipy still computes
])
def test_small_samples_match_scipy(n, m, method):
    rng = np.random.default_rng(n * 7 + m)
    reference, current = rng.normal(size=n), rng.normal(0.1, 1.2, size=m)

    ours = CVMDetector(method=method).fit(reference).score(current)
    theirs = stats.cramervonmises_2samp(reference, current, method=method)

    assert ours.statistic == pytest.approx(theirs.statistic, abs=1e-6)
    assert ours.p_value == pytest.approx(theirs.pvalue, abs=1e-6)
    assert (ours.test, ours.n_reference, ours.n_current) == ("cvm", n, m)


def test_ties_use_mid_ranks_as_scipy_does():
    rng = np.random.default_rng(3)
    reference, current = rng.integers(0, 6, size=400).astype(float), rng.integers(0, 7, size=300).astype(float)

    ours = CVMDetector().fit(reference).score(current)
    theirs = stats.cramervonmises_2samp(reference, current)

    assert ours.statistic == pytest.approx(theirs.statistic, abs=1e-9)
    assert ours.p_value == pytest.approx(theirs.pvalue, abs=1e-9)


@pytest.mark.parametrize(("shift", "rounded"), [(0.0, False), (0.015, False), (0.03, False), (0.02, True)])
def test_the_large_sample_path_agrees_with_scipy_asymptotic_on_20k_samples(shift, rounded):
    rng = np.random.default_rng(20_000 + int(shift * 1000))
    reference, current = rng.normal(size=20_000), rng.normal(shift, 1.0, size=20_000)
    if rounded:  # many ties
        reference, current = np.round(reference, 1), np.round(current, 1)
    assert max(reference.size, current.size) > SCIPY_MAX_N  # our own merge-based path

    ours = CVMDetector().fit(reference).score(current)
    theirs = stats.cramervonmises_2samp(reference, current, method="asymptotic")

    assert ours.statistic == pytest.approx(theirs.statistic, rel=1e-9)
    assert ours.p_value == pytest.approx(theirs.pvalue, abs=1e-3)


def test_unequal_large_samples_and_a_strong_shift():
    rng = np.random.default_rng(8)
    reference, current = rng.normal(size=30_000), rng.normal(0.3, 1.0, size=12_000)

    ours = CVMDetector().fit(reference).score(current)
    theirs = stats.cramervonmises_2samp(reference, current, method="asymptotic")

    assert ours.statistic == pytest.approx(theirs.statistic, rel=1e-9)
    assert ours.p_value == pytest.approx(theirs.pvalue, abs=1e-3)
    assert ours.p_value < 1e-10 and ours.drift_detected


def test_the_limiting_distribution_has_the_tabulated_quantiles():
    # Anderson & Darling (1952): upper 10%, 5%, 1% points of the limiting omega^2 distribution.
    assert cvm_limit_cdf(0.34730) == pytest.approx(0.90, abs=1e-4)
    assert cvm_limit_cdf(0.46136) == pytest.approx(0.95, abs=1e-4)
    assert cvm_limit_cdf(0.74346) == pytest.approx(0.99, abs=1e-4)


def test_a_change_of_scale_is_found_more_often_than_by_ks():
    rng = np.random.default_rng(12)
    found = {"cvm": 0, "ks": 0}
    for _ in range(60):
        reference, current = rng.normal(size=300), rng.normal(0.0, 1.3, size=300)
        found["cvm"] += CVMDetector().fit(reference).score(current).drift_detected
        found["ks"] += KSDetector().fit(reference).score(current).drift_detected

    assert found["cvm"] > found["ks"]  # 34 and 23 of 60 with this seed
    assert found["cvm"] >= 25


def test_fewer_than_two_values_give_no_verdict_but_the_effect_size():
    detector = CVMDetector().fit([1.0, 2.0, 3.0, 4.0])

    result = detector.score([9.0])

    assert np.isnan(result.statistic) and np.isnan(result.p_value) and not result.drift_detected
    assert result.effect_name == "wasserstein" and result.effect_size > 0
