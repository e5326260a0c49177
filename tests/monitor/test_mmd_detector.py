"""The MMD detector: calm on clean tables, finds a small shift in one of 20 features, agrees with a brute-force
permutation test, stays within 2 GiB at 100k + 100k rows, and honours the detector contract."""

from __future__ import annotations

import pickle
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mape.errors import InvalidParameterError, NotFittedError
from mape.monitor.detectors import MMDDetector, MMDResult

ROOT = Path(__file__).resolve().parents[2]


def brute_force_mmd_test(reference: np.ndarray, current: np.ndarray, *, n_permutations: int,
                         random_state: int) -> tuple[float, float, float]:
    """The same test in plain numpy with the whole kernel matrix: (MMD²_u, p-value, bandwidth).

    Same recipe as the detector: pool, centre, scale each column by its pooled standard deviation
    (ddof 1), median distance between distinct rows as bandwidth, the permutations drawn by the
    detector's seed logic (stream ``[1, random_state]``, argsort of uniforms); no subsampling here.
    """
    pooled = np.concatenate([reference, current])
    pooled = pooled - pooled.mean(axis=0)
    pooled = pooled / pooled.std(axis=0, ddof=1)
    squared = ((pooled[:, None, :] - pooled[None, :, :]) ** 2).sum(axis=-1)
    upper = np.triu_indices(len(pooled), k=1)
    bandwidth = float(np.median(np.sqrt(squared[upper])))
    kernel = np.exp(-squared / (2 * bandwidth**2))

    def mmd2(first: np.ndarray) -> float:
        second = np.setdiff1d(np.arange(len(pooled)), first)
        m, n = len(first), len(second)
        kxx, kyy = kernel[np.ix_(first, first)], kernel[np.ix_(second, second)]
        kxy = kernel[np.ix_(first, second)]
        return ((kxx.sum() - np.trace(kxx)) / (m * (m - 1)) + (kyy.sum() - np.trace(kyy)) / (n * (n - 1))
                - 2 * kxy.mean())

    rng = np.random.default_rng([1, random_state])
    permutations = np.argsort(rng.random((n_permutations, len(pooled))), axis=1)
    observed = mmd2(np.arange(len(reference)))
    null = np.array([mmd2(p[: len(reference)]) for p in permutations])
    return observed, (1 + np.count_nonzero(null >= observed)) / (1 + n_permutations), bandwidth


def test_no_alarm_on_clean_tables_at_about_alpha():
    alarms = 0
    for seed in range(20):
        rng = np.random.default_rng(seed)
        result = MMDDetector(alpha=0.05, random_state=seed).fit(rng.normal(size=(500, 20))).score(
            rng.normal(size=(500, 20)))
        assert 0.0 < result.p_value <= 1.0
        alarms += result.drift_detected
    # Binomial(20, 0.05): P(more than 3) = 1.6 %.
    assert alarms <= 3


def test_finds_a_half_sigma_shift_in_one_of_twenty_features():
    rng = np.random.default_rng(42)
    reference = rng.normal(size=(2000, 20))
    current = rng.normal(size=(2000, 20))
    current[:, 7] += 0.5

    result = MMDDetector().fit(reference).score(current)

    assert result.drift_detected
    assert result.p_value == pytest.approx(1 / 101)
    assert (result.n_reference_tested, result.n_current_tested) == (2000, 2000)


@pytest.mark.parametrize("shift", [0.0, 0.25])
def test_agrees_with_a_brute_force_permutation_test(shift):
    rng = np.random.default_rng(3)
    reference = rng.normal(size=(300, 4))
    current = rng.normal(size=(300, 4))
    current[:, 0] += shift
    # A block size that does not divide 600 exercises ragged and mirrored tiles.
    result = MMDDetector(n_permutations=200, block_size=128, random_state=9).fit(reference).score(current)

    statistic, p_value, bandwidth = brute_force_mmd_test(reference, current, n_permutations=200, random_state=9)

    assert result.statistic == pytest.approx(statistic, abs=1e-5)
    assert result.bandwidth == pytest.approx(bandwidth, rel=1e-5)
    # The same permutations, in float64 both ways: the same p-value.
    assert result.p_value == pytest.approx(p_value)


def test_the_block_size_does_not_change_the_result():
    rng = np.random.default_rng(4)
    reference, current = rng.normal(size=(400, 3)), rng.normal(0.2, 1.0, size=(350, 3))

    results = [MMDDetector(block_size=size).fit(reference).score(current) for size in (7, 100, 4096)]

    assert results[0].statistic == pytest.approx(results[2].statistic, abs=1e-12)
    assert results[1].statistic == pytest.approx(results[2].statistic, abs=1e-12)


def test_large_samples_are_cut_to_max_samples_for_the_whole_test():
    rng = np.random.default_rng(5)
    detector = MMDDetector(max_samples=300).fit(rng.normal(size=(1000, 3)))

    result = detector.score(rng.normal(size=(800, 3)))

    assert tuple(detector.reference_.shape) == (300, 3)
    assert (result.n_reference, result.n_current) == (1000, 800)
    assert (result.n_reference_tested, result.n_current_tested) == (300, 300)


@pytest.mark.slow
def test_peak_memory_at_100k_plus_100k_rows_of_20_features_stays_under_2_gib():
    script = textwrap.dedent("""
        import resource
        import numpy as np
        from mape.monitor.detectors import MMDDetector
        rng = np.random.default_rng(0)
        reference, current = rng.normal(size=(100_000, 20)), rng.normal(size=(100_000, 20))
        result = MMDDetector().fit(reference).score(current)
        assert result.n_reference == result.n_current == 100_000, result
        print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)  # KiB on Linux
    """)
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=300,
                          check=True)

    peak_kib = int(done.stdout.split()[-1])
    assert peak_kib < 2 * 1024**2


def test_rows_with_missing_values_are_dropped_and_counted():
    rng = np.random.default_rng(6)
    reference = rng.normal(size=(200, 3))
    current = rng.normal(size=(120, 3)).astype(object)
    reference[[0, 5, 9], 1] = np.nan
    reference[3, 0] = np.inf
    current[:2, 2] = None

    result = MMDDetector().fit(reference).score(current)

    assert (result.n_reference, result.n_missing_reference) == (196, 4)
    assert (result.n_current, result.n_missing_current) == (118, 2)
    assert 0.0 < result.p_value <= 1.0


def test_dataframes_are_matched_by_column_name():
    rng = np.random.default_rng(7)
    reference = pd.DataFrame(rng.normal(size=(300, 3)), columns=["a", "b", "c"])
    current = pd.DataFrame(rng.normal(size=(300, 3)), columns=["a", "b", "c"])
    detector = MMDDetector().fit(reference)

    assert list(detector.feature_names_in_) == ["a", "b", "c"]
    assert detector.score(current[["c", "a", "b"]]) == detector.score(current)
    with pytest.raises(ValueError, match=r"lacks the reference's columns \['b'\]"):
        detector.score(current.drop(columns="b"))


def test_a_different_number_of_features_is_refused():
    detector = MMDDetector().fit(np.zeros((10, 3)))

    with pytest.raises(ValueError, match="fitted on 3 features; the current sample has 2"):
        detector.score(np.zeros((10, 2)))


def test_a_sample_too_small_gives_no_verdict():
    result = MMDDetector().fit(np.random.default_rng(0).normal(size=(50, 2))).score(np.empty((0, 2)))

    assert np.isnan(result.statistic) and np.isnan(result.p_value)
    assert result.drift_detected is False


def test_result_is_a_detector_result_named_mmd():
    result = MMDDetector().fit(np.random.default_rng(0).normal(size=(60, 2))).score(
        np.random.default_rng(1).normal(size=(40, 2)))

    assert isinstance(result, MMDResult)
    assert result.test == "mmd" and result.n_permutations == 100 and result.bandwidth > 0


def test_repr_clone_and_pickle():
    rng = np.random.default_rng(8)
    detector = MMDDetector(alpha=0.01, n_permutations=50, device="auto").fit(rng.normal(size=(200, 4)))
    current = rng.normal(size=(100, 4))

    assert repr(MMDDetector()) == "MMDDetector()"
    assert repr(detector) == "MMDDetector(alpha=0.01, n_permutations=50, device='auto')"
    twin = detector.clone()
    assert twin.get_params() == detector.get_params()
    with pytest.raises(NotFittedError, match="This MMDDetector instance is not fitted yet"):
        twin.score(current)
    restored = pickle.loads(pickle.dumps(detector))
    assert restored.score(current) == detector.score(current)


def test_seeded_runs_are_deterministic_and_the_seed_matters():
    rng = np.random.default_rng(9)
    reference, current = rng.normal(size=(300, 3)), rng.normal(0.1, 1.0, size=(300, 3))

    def p_values(seed: int) -> list[float]:
        return [MMDDetector(random_state=seed, n_permutations=500).fit(reference).score(current).p_value
                for _ in range(2)]

    first, second = p_values(1), p_values(2)
    assert first[0] == first[1]
    assert first[0] != second[0]


@pytest.mark.parametrize(("name", "value", "expected"), [
    ("alpha", 1.5, "a float in (0, 1)"),
    ("n_permutations", 0, "an int in [1, inf)"),
    ("max_samples", 1, "an int in [2, inf)"),
    ("block_size", 2.5, "an int in [1, inf)"),
    ("standardize", "yes", "a bool"),
    ("random_state", -1, "an int in [0, inf)"),
    ("device", "tpu", "a str among {'cpu', 'cuda', 'auto'}"),
])
def test_invalid_parameters_have_the_one_message_shape(name, value, expected):
    with pytest.raises(InvalidParameterError) as caught:
        MMDDetector(**{name: value})

    assert str(caught.value) == f"The {name!r} parameter of MMDDetector must be {expected}. Got {value!r} instead."
