"""benjamini_hochberg gives monotone adjusted q-values, ignores NaNs, and matches a hand computation."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from mape.errors import InvalidParameterError
from mape.monitor.multiple_testing import benjamini_hochberg


def test_matches_a_hand_computed_example():
    p = [0.042, 0.001, 0.039, 0.205, 0.008, 0.06, 0.041, 0.074]
    # sorted: 0.001 0.008 0.039 0.041 0.042 0.06 0.074 0.205; p * 8 / rank:
    #         0.008 0.032 0.104 0.082 0.0672 0.08 0.084571 0.205
    # running minimum from the largest rank down:
    #         0.008 0.032 0.0672 0.0672 0.0672 0.08 0.084571 0.205
    expected = [0.0672, 0.008, 0.0672, 0.205, 0.032, 0.08, 0.0672, 0.074 * 8 / 7]

    np.testing.assert_allclose(benjamini_hochberg(p), expected, rtol=1e-12)


def test_q_values_are_capped_at_one_and_keep_the_order_of_the_p_values():
    rng = np.random.default_rng(0)
    p = rng.uniform(size=200) ** 3

    q = benjamini_hochberg(p)

    order = np.argsort(p)
    assert np.all(np.diff(q[order]) >= 0)
    assert np.all((q >= p) & (q <= 1))
    np.testing.assert_allclose(q, stats.false_discovery_control(p, method="bh"), rtol=1e-12)


def test_nan_p_values_stay_nan_and_do_not_count():
    q = benjamini_hochberg([0.01, np.nan, 0.04, np.nan])

    np.testing.assert_allclose(q, [0.02, np.nan, 0.04, np.nan])
    assert np.all(np.isnan(benjamini_hochberg([np.nan, np.nan])))
    assert benjamini_hochberg([]).shape == (0,)


def test_p_values_outside_zero_one_are_refused():
    with pytest.raises(InvalidParameterError, match="The 'p_values' parameter of benjamini_hochberg must be"):
        benjamini_hochberg([0.5, 1.2])
