"""KS's automatic p-value: exact where it is cheap, asymptotic beyond, and the two agree where they meet."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from mape.monitor.detectors import KSDetector


@pytest.mark.parametrize("shift", [0.0, 0.05, 0.1])
def test_unequal_windows_past_the_cheap_size_get_the_asymptotic_p_value_close_to_the_exact_one(shift):
    rng = np.random.default_rng(int(shift * 100))
    reference, current = rng.normal(size=5000), rng.normal(shift, 1, size=4917)  # n * m above 4,000,000
    auto = KSDetector().fit(reference).score(current)
    exact = stats.ks_2samp(reference, current, method="exact")
    assert auto.statistic == pytest.approx(exact.statistic, abs=1e-12)
    assert auto.p_value == pytest.approx(exact.pvalue, rel=0.02, abs=1e-12)


def test_small_unequal_windows_keep_the_exact_p_value():
    rng = np.random.default_rng(1)
    reference, current = rng.normal(size=1500), rng.normal(0.1, 1, size=1200)  # n * m = 1,800,000
    auto = KSDetector().fit(reference).score(current)
    assert auto.p_value == pytest.approx(stats.ks_2samp(reference, current, method="exact").pvalue, rel=1e-9)
