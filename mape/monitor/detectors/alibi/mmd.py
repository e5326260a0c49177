"""Multivariate drift detector: alibi-detect's maximum mean discrepancy test (``MMDDrift``, PyTorch backend).

Who calls it: callers comparing whole tables with the alibi-detect backend;
the built-in equivalent is :class:`~mape.monitor.detectors.MMDDetector`.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any, ClassVar, Literal

import numpy as np

from mape.monitor.detectors._params import Boolean, Constraint, Interval, Options
from mape.monitor.detectors.alibi._kernel import AlibiKernelDetector


class AlibiMMDDetector(AlibiKernelDetector):
    """Maximum mean discrepancy test of a table against a reference by alibi-detect's ``MMDDrift``.

    alibi-detect's test [1]_: the unbiased MMD² with a Gaussian kernel whose
    bandwidth is the median heuristic on the reference, and a permutation
    p-value ``mean(permuted MMD² >= observed)`` (which, unlike the built-in
    :class:`~mape.monitor.detectors.MMDDetector`'s ``(1 + count) / (1 +
    n_permutations)``, can be 0). With ``standardize`` the rows are centred
    and scaled by the reference's column means and standard deviations before
    alibi-detect sees them, so no feature dominates by its unit alone.

    Parameters
    ----------
    alpha : float, default 0.05
        Significance level; alibi's ``p_val``.
    n_permutations : int, default 100
        Permutations behind the p-value.
    max_samples : int, default 5000
        Most rows of each side the test uses (drawn at random, seeded).
    standardize : bool, default True
        Centre and scale each column by the reference's mean and standard deviation.
    random_state : int, default 0
        Seed of the subsampling and of torch's generator around alibi-detect's calls.
    device : {"cpu", "cuda", "auto"}, default "cpu"
        Where torch computes.

    Attributes
    ----------
    centre_, scale_ : numpy.ndarray
        The reference's column means and standard deviations (0 and 1 without ``standardize``).
    alibi_detector_, reference_, n_reference_, n_missing_reference_, n_features_in_, feature_names_in_
        See :class:`~mape.monitor.detectors.alibi._kernel.AlibiKernelDetector`.

    References
    ----------
    .. [1] Gretton, A., Borgwardt, K. M., Rasch, M. J., Schölkopf, B. and
       Smola, A. (2012). A kernel two-sample test. Journal of Machine
       Learning Research, 13, 723-773.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(8)
    >>> detector = AlibiMMDDetector().fit(rng.normal(size=(400, 5)))
    >>> clean = detector.score(rng.normal(size=(200, 5)))
    >>> clean.drift_detected, f"{clean.p_value:.2f}"
    (False, '0.64')
    >>> shifted = rng.normal(size=(200, 5))
    >>> shifted[:, 0] += 0.8
    >>> result = detector.score(shifted)
    >>> result.test, result.drift_detected, result.p_value
    ('mmd', True, 0.0)
    """

    test_name: ClassVar[str] = "mmd"
    _parameter_constraints: ClassVar[dict[str, Constraint]] = {
        "alpha": Interval(float, 0, 1, closed="neither"),
        "n_permutations": Interval(int, 1, None, closed="left"),
        "max_samples": Interval(int, 2, None, closed="left"),
        "standardize": Boolean(),
        "random_state": Interval(int, 0, None, closed="left"),
        "device": Options(("cpu", "cuda", "auto")),
    }

    def __init__(self, *, alpha: float = 0.05, n_permutations: int = 100, max_samples: int = 5000,
                 standardize: bool = True, random_state: int = 0,
                 device: Literal["cpu", "cuda", "auto"] = "cpu") -> None:
        self.alpha = alpha
        self.n_permutations = n_permutations
        self.max_samples = max_samples
        self.standardize = standardize
        self.random_state = random_state
        self.device = device
        self._reset()

    def _learn(self, reference: np.ndarray) -> None:
        self.centre_, self.scale_ = reference_scaling(reference, bool(self.standardize))

    def _prepare(self, values: np.ndarray) -> np.ndarray:
        return ((values - self.centre_) / self.scale_).astype(np.float32)

    def _build(self, cd: ModuleType, reference: np.ndarray, device: Any) -> Any:
        return cd.MMDDrift(reference, backend="pytorch", p_val=self.alpha, n_permutations=self.n_permutations,
                           device=device)


def reference_scaling(reference: np.ndarray, standardize: bool) -> tuple[np.ndarray, np.ndarray]:
    """Column means and standard deviations of the reference (1 for a constant column); 0 and 1 without ``standardize``.

    >>> reference_scaling(np.array([[1.0, 5.0], [3.0, 5.0]]), True)
    (array([2., 5.]), array([1., 1.]))
    """
    columns = reference.shape[1]
    if not standardize or reference.shape[0] == 0:
        return np.zeros(columns), np.ones(columns)
    scale = reference.std(axis=0)
    return reference.mean(axis=0), np.where(scale > 0, scale, 1.0)
