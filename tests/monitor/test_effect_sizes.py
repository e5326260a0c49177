"""Effect sizes: zero when nothing moved, hand-computed values, scipy's Wasserstein distance, detectors report them."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats
from scipy.spatial.distance import jensenshannon

from mape.errors import InvalidParameterError
from mape.monitor.detectors import ChiSquareDetector, CVMDetector, KSDetector
from mape.monitor.detectors._pooled import Pooled
from mape.monitor.detectors.effect_size import (
    PSI_EPSILON,
    bin_counts,
    category_bin_counts,
    jensen_shannon,
    psi,
    quantile_edges,
    wasserstein_normalised,
)


def test_psi_and_js_are_zero_on_identical_distributions():
    counts = [120, 80, 40, 10]
    assert psi(counts, counts) == 0.0
    assert jensen_shannon(counts, counts) == 0.0
    # the same proportions at another sample size are the same distribution
    assert psi(counts, [12, 8, 4, 1]) == pytest.approx(0.0, abs=1e-15)
    assert jensen_shannon(counts, [12, 8, 4, 1]) == pytest.approx(0.0, abs=1e-7)

    rng = np.random.default_rng(0)
    reference = np.sort(rng.normal(size=5000))
    edges = quantile_edges(reference)
    same = bin_counts(reference, edges, assume_sorted=True)
    assert psi(same, same) == 0.0 and jensen_shannon(same, same) == 0.0
    assert wasserstein_normalised(reference, reference[::-1]) == 0.0


def test_psi_matches_a_hand_computation():
    # proportions (0.5, 0.3, 0.2) -> (0.4, 0.3, 0.3):
    # (0.4 - 0.5) ln(0.4 / 0.5) + 0 + (0.3 - 0.2) ln(0.3 / 0.2) = 0.0223144 + 0.0405465
    assert psi([50, 30, 20], [40, 30, 30]) == pytest.approx(0.1 * math.log(1.25) + 0.1 * math.log(1.5), rel=1e-12)
    assert psi([50, 30, 20], [40, 30, 30]) == pytest.approx(0.0628609, abs=1e-7)


def test_psi_raises_empty_bins_to_epsilon():
    # (0.5, 0.5, 0) -> (0.4, 0.4, 0.2): the empty reference bin counts as 1e-4
    expected = 2 * (-0.1) * math.log(0.8) + (0.2 - PSI_EPSILON) * math.log(0.2 / PSI_EPSILON)
    assert psi([5, 5, 0], [4, 4, 2]) == pytest.approx(expected, rel=1e-12)
    assert math.isfinite(psi([1, 0], [0, 1]))


def test_jensen_shannon_matches_a_hand_computation_and_scipy():
    # P = (1/2, 1/2, 0), Q = (0, 1/2, 1/2), M = (1/4, 1/2, 1/4):
    # KL(P||M) = 1/2 log2(2) + 1/2 log2(1) = 1/2 = KL(Q||M); JSD = 1/2, distance sqrt(1/2)
    assert jensen_shannon([1, 1, 0], [0, 1, 1]) == pytest.approx(math.sqrt(0.5), rel=1e-12)
    assert jensen_shannon([3, 0], [0, 5]) == 1.0

    rng = np.random.default_rng(1)
    for _ in range(20):
        p, q = rng.integers(0, 50, size=12), rng.integers(0, 50, size=12)
        assert jensen_shannon(p, q) == pytest.approx(jensenshannon(p, q, base=2), abs=1e-12)
        assert 0.0 <= jensen_shannon(p, q) <= 1.0


def test_empty_samples_give_nan_and_mismatched_bins_are_refused():
    assert math.isnan(psi([0, 0], [1, 2])) and math.isnan(jensen_shannon([1, 2], [0, 0]))
    assert math.isnan(wasserstein_normalised(np.array([1.0, 2.0]), []))
    with pytest.raises(ValueError, match="differ in length: 2 and 3 bins"):
        psi([1, 2], [1, 2, 3])


@pytest.mark.parametrize("seed", range(5))
def test_wasserstein_equals_scipy_over_the_reference_standard_deviation(seed):
    rng = np.random.default_rng(seed)
    reference = rng.gamma(2.0, 3.0, size=rng.integers(50, 5000))
    current = rng.gamma(2.2, 2.9, size=rng.integers(50, 5000))
    if seed % 2:  # ties inside and across the samples
        reference, current = np.round(reference), np.round(current)

    ours = wasserstein_normalised(np.sort(reference), current)

    assert ours == pytest.approx(stats.wasserstein_distance(reference, current) / np.std(reference), rel=1e-9)


def test_wasserstein_of_a_pure_shift_is_the_shift_in_standard_deviations():
    reference = np.sort(np.random.default_rng(2).normal(5.0, 2.0, size=10_000))
    # the same values moved by 0.6 = 0.3 reference standard deviations
    assert wasserstein_normalised(reference, reference + 0.6) == pytest.approx(0.6 / np.std(reference), rel=1e-9)


def test_a_constant_reference_gives_zero_or_infinity():
    constant = np.full(10, 3.0)
    assert wasserstein_normalised(constant, [3.0, 3.0]) == 0.0
    assert wasserstein_normalised(constant, [3.0, 4.0]) == math.inf


def test_quantile_bins_are_open_ended_and_deduplicated():
    reference = np.arange(1.0, 101.0)
    edges = quantile_edges(reference, bins=4)
    np.testing.assert_allclose(edges, np.quantile(reference, [0.25, 0.5, 0.75]))
    assert bin_counts(reference, edges, assume_sorted=True).tolist() == [25, 25, 25, 25]
    # values beyond the reference's range land in the outer bins; an edge value goes to the bin below
    current = np.array([-1e9, edges[0], edges[0] + 1e-9, 1e9])
    assert bin_counts(current, edges).tolist() == [2, 1, 0, 1]
    assert bin_counts(np.sort(current), edges, assume_sorted=True).tolist() == [2, 1, 0, 1]
    # a spike holding 60% of the reference: the 5% to 55% quantiles are all 0 and become one edge
    spiky = np.sort(np.concatenate([np.zeros(600), np.arange(1.0, 401.0)]))
    edges = quantile_edges(spiky, bins=20)
    assert edges.size == 19 - 10
    assert edges[0] == 0.0 and edges[1] == pytest.approx(0.4)  # the 60% quantile, interpolated


def test_unseen_categories_share_one_bin():
    reference, current = category_bin_counts({"web": 6, "ios": 4}, {"ios": 5, "tv": 2, "car": 1})
    assert reference.tolist() == [6, 4, 0] and current.tolist() == [0, 5, 3]


def test_pooled_statistics_match_scipy_with_ties():
    rng = np.random.default_rng(4)
    for _ in range(10):
        reference = np.sort(rng.integers(0, 30, size=rng.integers(2, 400)).astype(float))
        current = np.sort(rng.integers(3, 35, size=rng.integers(2, 400)).astype(float))
        pooled = Pooled(reference, current)
        assert pooled.ks() == pytest.approx(stats.ks_2samp(reference, current).statistic, abs=1e-12)
        assert pooled.wasserstein() == pytest.approx(stats.wasserstein_distance(reference, current), rel=1e-12)


@pytest.mark.parametrize("cls", [KSDetector, CVMDetector])
def test_numeric_detectors_report_the_configured_effect_size(cls):
    rng = np.random.default_rng(5)
    reference, current = rng.normal(size=4000), rng.normal(0.3, 1.0, size=3000)
    ordered = np.sort(reference)
    edges = quantile_edges(ordered, bins=10)
    expected = {
        "wasserstein": stats.wasserstein_distance(reference, current) / np.std(reference),
        "psi": psi(bin_counts(ordered, edges), bin_counts(current, edges)),
        "js": jensen_shannon(bin_counts(ordered, edges), bin_counts(current, edges)),
    }
    for effect, value in expected.items():
        result = cls(effect=effect, bins=10).fit(reference).score(current)
        assert (result.effect_name, result.effect_size) == (effect, pytest.approx(value, rel=1e-9))
    assert cls().fit(reference).score(current).effect_name == "wasserstein"  # the default


def test_the_chi_squared_detector_reports_js_or_psi_over_categories():
    reference = ["a"] * 50 + ["b"] * 50
    current = ["a"] * 40 + ["b"] * 40 + ["new"] * 20

    js = ChiSquareDetector().fit(reference).score(current)
    by_psi = ChiSquareDetector(effect="psi").fit(reference).score(current)

    assert (js.effect_name, js.effect_size) == ("js", pytest.approx(jensen_shannon([50, 50, 0], [40, 40, 20])))
    assert (by_psi.effect_name, by_psi.effect_size) == ("psi", pytest.approx(psi([50, 50, 0], [40, 40, 20])))


def test_effect_parameters_are_validated_with_the_one_message_shape():
    with pytest.raises(InvalidParameterError, match=r"^The 'effect' parameter of KSDetector must be a str among "
                                                    r"\{'wasserstein', 'psi', 'js'\}\. Got 'cohen' instead\.$"):
        KSDetector(effect="cohen")
    with pytest.raises(InvalidParameterError, match="The 'effect' parameter of ChiSquareDetector must be a str among"):
        ChiSquareDetector(effect="wasserstein")
    with pytest.raises(InvalidParameterError, match=r"The 'bins' parameter of CVMDetector must be an int in \[2, inf\)"):
        CVMDetector(bins=1)
