"""AlibiMMDDetector and AlibiLSDDDetector: alibi-detect's kernel tests (PyTorch backend) behind MultivariateDetector."""

from __future__ import annotations

import pickle

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("alibi_detect")

import torch  # noqa: E402
from alibi_detect.cd import LSDDDrift, MMDDrift  # noqa: E402

from mape.errors import InvalidParameterError, NotFittedError  # noqa: E402
from mape.monitor.detectors import MMDDetector  # noqa: E402
from mape.monitor.detectors.alibi import (ALIBI_MULTIVARIATE_DETECTORS, AlibiKernelResult,  # noqa: E402
                                          AlibiLSDDDetector, AlibiMMDDetector)

pytestmark = pytest.mark.alibi


def tables(seed: int, shift: float = 0.0, *, n: int = 400, m: int = 200, d: int = 4) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    current = rng.normal(size=(m, d))
    current[:, 0] += shift
    return rng.normal(size=(n, d)), current


def test_mmd_equals_alibi_called_directly_with_the_same_seed():
    reference, current = tables(1, 0.3)
    torch.manual_seed(0)
    direct = MMDDrift(reference.astype(np.float32), backend="pytorch", p_val=0.05, n_permutations=100, device="cpu")
    torch.manual_seed(0)
    expected = direct.predict(current.astype(np.float32))["data"]

    result = AlibiMMDDetector(standardize=False).fit(reference).score(current)

    assert isinstance(result, AlibiKernelResult) and result.test == "mmd"
    assert (result.p_value, result.statistic, result.distance_threshold) == (
        expected["p_val"], expected["distance"], expected["distance_threshold"])
    assert result.bandwidth == pytest.approx(float(direct._detector.kernel.sigma))


def test_lsdd_equals_alibi_called_directly_with_the_same_seed():
    reference, current = tables(2, 0.3)
    torch.manual_seed(0)
    direct = LSDDDrift(reference.astype(np.float32), backend="pytorch", p_val=0.05, n_permutations=100, device="cpu")
    torch.manual_seed(0)
    expected = direct.predict(current.astype(np.float32))["data"]

    result = AlibiLSDDDetector().fit(reference).score(current)

    assert result.test == "lsdd"
    assert (result.p_value, result.statistic, result.distance_threshold) == (
        expected["p_val"], expected["distance"], expected["distance_threshold"])


@pytest.mark.parametrize("cls", ALIBI_MULTIVARIATE_DETECTORS)
def test_a_shift_in_one_of_four_features_is_found_and_clean_windows_mostly_pass(cls):
    reference, shifted = tables(3, 0.7)
    detector = cls().fit(reference)

    assert detector.score(shifted).drift_detected
    alarms = sum(cls(random_state=seed).fit(tables(100 + seed)[0]).score(tables(100 + seed)[1]).drift_detected
                 for seed in range(20))
    assert alarms <= 4  # Binomial(20, 0.05): P(> 4) < 0.003


def test_the_shift_found_agrees_with_the_builtin_mmd():
    reference, shifted = tables(4, 0.5, n=600, m=300)

    ours = AlibiMMDDetector().fit(reference).score(shifted)
    builtin = MMDDetector().fit(reference).score(shifted)

    assert ours.drift_detected and builtin.drift_detected
    assert ours.statistic == pytest.approx(builtin.statistic, rel=0.35)  # both unbiased MMD², median-heuristic σ


@pytest.mark.parametrize("cls", ALIBI_MULTIVARIATE_DETECTORS)
def test_seeded_pickled_and_cloned_detectors_score_the_same(cls):
    reference, current = tables(5, 0.2)
    detector = cls(random_state=3).fit(reference)

    first = detector.score(current)

    assert detector.score(current) == first
    assert pickle.loads(pickle.dumps(detector)).score(current) == first
    assert detector.clone().fit(reference).score(current) == first
    assert repr(detector) == f"{cls.__name__}(random_state=3)"


def test_rows_with_missing_values_are_dropped_columns_read_by_name_and_samples_capped():
    rng = np.random.default_rng(6)
    reference = pd.DataFrame(rng.normal(size=(300, 3)), columns=["a", "b", "c"])
    reference.iloc[:5, 1] = np.nan
    current = pd.DataFrame(rng.normal(size=(250, 3)), columns=["c", "a", "b"])  # another column order
    current.iloc[:2, 0] = np.inf

    result = AlibiMMDDetector(max_samples=200).fit(reference).score(current)

    assert (result.n_reference, result.n_missing_reference, result.n_current, result.n_missing_current) == (
        295, 5, 248, 2)
    assert (result.n_reference_tested, result.n_current_tested) == (200, 200)
    with pytest.raises(ValueError, match=r"lacks the reference's columns \['c'\]"):
        AlibiMMDDetector().fit(reference).score(current[["a", "b"]])


def test_contract_errors():
    with pytest.raises(NotFittedError):
        AlibiLSDDDetector().score(np.zeros((5, 2)))
    with pytest.raises(InvalidParameterError, match="The 'n_permutations' parameter of AlibiMMDDetector"):
        AlibiMMDDetector(n_permutations=0)
    with pytest.raises(ValueError, match="more reference rows than n_kernel_centers"):
        AlibiLSDDDetector(n_kernel_centers=50).fit(np.zeros((40, 2)))
