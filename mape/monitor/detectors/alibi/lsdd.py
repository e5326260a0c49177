"""Multivariate drift detector: alibi-detect's least-squares density difference test (``LSDDDrift``, PyTorch).

Who calls it: callers comparing whole tables with the alibi-detect backend.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any, ClassVar, Literal

import numpy as np

from mape.monitor.detectors._params import Constraint, Interval, Options
from mape.monitor.detectors.alibi._kernel import AlibiKernelDetector
from mape.monitor.online.base import OrNone


class AlibiLSDDDetector(AlibiKernelDetector):
    """Least-squares density difference test of a table against a reference by alibi-detect's ``LSDDDrift``.

    The LSDD [1]_ is the integrated squared difference of the two densities,
    estimated with Gaussian kernels centred on ``n_kernel_centers`` reference
    rows (set aside, not tested); alibi-detect standardises every column by
    the reference's mean and standard deviation itself, and the p-value is
    ``mean(permuted LSDD >= observed)`` over ``n_permutations`` relabellings.
    It scales linearly in the sample size (the kernel is evaluated against
    the centres only), so it is cheaper than MMD on large windows.

    Parameters
    ----------
    alpha : float, default 0.05
        Significance level; alibi's ``p_val``.
    n_permutations : int, default 100
        Permutations behind the p-value.
    max_samples : int, default 5000
        Most rows of each side the test uses (drawn at random, seeded).
    n_kernel_centers : int, optional
        Reference rows used as kernel centres; alibi-detect's default is a
        twentieth of the reference.
    lambda_rd_max : float, default 0.2
        alibi-detect's bound on the regularisation, relative to the LSDD.
    random_state : int, default 0
        Seed of the subsampling and of torch's generator around alibi-detect's calls.
    device : {"cpu", "cuda", "auto"}, default "cpu"
        Where torch computes.

    Attributes
    ----------
    alibi_detector_, reference_, n_reference_, n_missing_reference_, n_features_in_, feature_names_in_
        See :class:`~mape.monitor.detectors.alibi._kernel.AlibiKernelDetector`.

    References
    ----------
    .. [1] Bu, L., Alippi, C. and Zhao, D. (2018). A pdf-free change detection
       test based on density difference estimation. IEEE Transactions on
       Neural Networks and Learning Systems, 29(2), 324-334.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(8)
    >>> detector = AlibiLSDDDetector().fit(rng.normal(size=(400, 5)))
    >>> clean = detector.score(rng.normal(size=(200, 5)))
    >>> clean.drift_detected, f"{clean.p_value:.2f}"
    (False, '0.84')
    >>> shifted = rng.normal(size=(200, 5))
    >>> shifted[:, 0] += 0.8
    >>> result = detector.score(shifted)
    >>> result.test, result.drift_detected, result.p_value
    ('lsdd', True, 0.0)
    """

    test_name: ClassVar[str] = "lsdd"
    _parameter_constraints: ClassVar[dict[str, Constraint]] = {
        "alpha": Interval(float, 0, 1, closed="neither"),
        "n_permutations": Interval(int, 1, None, closed="left"),
        "max_samples": Interval(int, 2, None, closed="left"),
        "n_kernel_centers": OrNone(Interval(int, 1, None, closed="left")),
        "lambda_rd_max": Interval(float, 0, None, closed="neither"),
        "random_state": Interval(int, 0, None, closed="left"),
        "device": Options(("cpu", "cuda", "auto")),
    }

    def __init__(self, *, alpha: float = 0.05, n_permutations: int = 100, max_samples: int = 5000,
                 n_kernel_centers: int | None = None, lambda_rd_max: float = 0.2, random_state: int = 0,
                 device: Literal["cpu", "cuda", "auto"] = "cpu") -> None:
        self.alpha = alpha
        self.n_permutations = n_permutations
        self.max_samples = max_samples
        self.n_kernel_centers = n_kernel_centers
        self.lambda_rd_max = lambda_rd_max
        self.random_state = random_state
        self.device = device
        self._reset()

    def _built(self) -> Any:
        if self.n_kernel_centers is not None and self.reference_.shape[0] <= self.n_kernel_centers + 1:
            raise ValueError(f"{type(self).__name__} needs more reference rows than n_kernel_centers + 1 "
                             f"({self.n_kernel_centers + 1}); got {self.reference_.shape[0]}.")
        return super()._built()

    def _build(self, cd: ModuleType, reference: np.ndarray, device: Any) -> Any:
        return cd.LSDDDrift(reference, backend="pytorch", p_val=self.alpha, n_permutations=self.n_permutations,
                            n_kernel_centers=self.n_kernel_centers, lambda_rd_max=self.lambda_rd_max, device=device)
