"""Multivariate drift detector: the maximum mean discrepancy (MMD) two-sample test, on torch.

Who calls it: a drift sensor that compares whole tables (all numeric features
of a model at once) instead of one column at a time, and the benchmark
``benchmarks/online_detectors.py``. torch is imported on first use, so that
importing :mod:`mape.monitor.detectors` stays cheap for the sensors that only
need the univariate tests.

Why a small base class of its own (:class:`MultivariateDetector`) instead of
:class:`~mape.monitor.detectors.base.Detector`: ``Detector.kind`` admits only
``"numeric"`` and ``"categorical"`` (one column), and every concrete
``Detector`` is checked by ``tests/monitor/test_detectors_common.py`` with a
one-column sample. A multivariate test takes a table, so it keeps the same
contract (keyword-only parameters validated by ``_parameter_constraints``,
``fit`` returning ``self``, fitted attributes ending in ``_``,
:class:`~mape.errors.NotFittedError` before ``fit``, repr/clone/pickle) and
the same :class:`~mape.monitor.detectors.base.DetectorResult`, but not the
one-column sample.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Literal, Self

import numpy as np
import numpy.typing as npt
import pandas as pd

from mape.errors import InvalidParameterError, NotFittedError
from mape.monitor.detectors._params import Boolean, Constraint, Interval, Options, Parameterized
from mape.monitor.detectors.base import DetectorResult

if TYPE_CHECKING:
    import torch

#: Rows of the pooled sample (drawn at random, whatever their side) on which
#: the median-heuristic bandwidth is computed: at most 1,000 rows, 499,500 pairs.
BANDWIDTH_SAMPLES = 1_000

Table = npt.ArrayLike | pd.DataFrame


@dataclass(frozen=True)
class MMDResult(DetectorResult):
    """A :class:`DetectorResult` (``test="mmd"``, ``statistic`` = unbiased MMD²) with the test's settings.

    Attributes
    ----------
    bandwidth : float
        The Gaussian kernel's bandwidth σ (median heuristic) in standardised units.
    n_reference_tested, n_current_tested : int
        Rows of each sample the test used: ``n_reference`` and ``n_current``
        cut to ``max_samples`` at random.
    n_permutations : int
        Permutations behind the p-value.
    """

    bandwidth: float = math.nan
    n_reference_tested: int = 0
    n_current_tested: int = 0
    n_permutations: int = 0


class MultivariateDetector(Parameterized, ABC):
    """Base class of two-sample drift detectors on tables (rows are samples, columns features).

    The same contract as :class:`~mape.monitor.detectors.base.Detector`, for
    data with several columns: subclasses declare ``test_name``,
    ``_parameter_constraints``, a keyword-only ``__init__`` that assigns its
    parameters and calls ``self._reset()``, and implement :meth:`_fit` and
    :meth:`_score`.
    """

    test_name: ClassVar[str]
    kind: ClassVar[Literal["multivariate"]] = "multivariate"
    _parameter_constraints: ClassVar[dict[str, Constraint]] = {}

    def _reset(self) -> None:
        """Validate the parameters and forget any fitted state."""
        self._validate_params()
        for name in self._fitted_attributes():
            delattr(self, name)

    def _fitted_attributes(self) -> list[str]:
        return [name for name in vars(self) if name.endswith("_") and not name.startswith("_")]


    def fit(self, reference: Table) -> Self:
        """Learn the reference table; returns ``self``."""
        self._reset()
        self._fit(reference)
        return self

    def score(self, current: Table) -> DetectorResult:
        """Test ``current`` against the reference.

        Raises
        ------
        NotFittedError
            If :meth:`fit` has not been called.
        """
        if not self._fitted_attributes():
            raise NotFittedError(
                f"This {type(self).__name__} instance is not fitted yet; call 'fit' with a reference sample first."
            )
        return self._score(current)

    @abstractmethod
    def _fit(self, reference: Table) -> None: ...

    @abstractmethod
    def _score(self, current: Table) -> DetectorResult: ...


class MMDDetector(MultivariateDetector):
    """Maximum mean discrepancy two-sample test of a table against a reference table, with a permutation p-value.

    The statistic is the unbiased estimate of the squared MMD [1]_ (Lemma 6)
    with the Gaussian kernel ``k(x, y) = exp(-|x - y|² / (2 σ²))``:
    ``MMD²_u = mean_{i≠j} k(x_i, x_j) + mean_{i≠j} k(y_i, y_j) - 2 mean_{i,j} k(x_i, y_j)``.
    σ is the median heuristic [2]_: the median Euclidean distance between
    distinct rows of a random subsample of at most ``BANDWIDTH_SAMPLES``
    (1,000) rows of the pooled sample. Before that, the pooled sample is
    centred and (with ``standardize``) each column divided by its pooled
    standard deviation, so that no feature dominates by its unit alone.

    The p-value comes from a permutation test [1]_ (section 5): the rows of
    the pooled sample are relabelled at random ``n_permutations`` times, and
    ``p = (1 + #{permuted MMD²_u >= observed}) / (1 + n_permutations)``, so
    the smallest p-value is ``1 / (1 + n_permutations)`` (0.0099 with 100).

    Subsampling, and why the whole test runs on the subsample: a permutation
    test is exact only when the permuted statistics are computed on the same
    rows as the observed one (the null distribution of MMD²_u shrinks like
    ``1/n``, so a null from 5,000 rows against a statistic from 100,000 would
    be far too wide and the test would miss drifts). Hence each side is cut
    to at most ``max_samples`` rows drawn at random without replacement (the
    reference at :meth:`fit`, the current table at each :meth:`score`), and
    both the observed statistic and its permutation null are computed on
    those rows. The test stays exact (its false-alarm rate is at most
    ``alpha``) and loses only power: it is the test of a random subsample of the
    data. The bandwidth, the centring and the scaling use the pooled rows
    regardless of their side, so they do not depend on the labels and keep
    the test exact.

    Memory: the ``(n + m)²`` kernel matrix is never built. It is computed in
    tiles of ``block_size × block_size`` (one tile and its mirror at a time,
    by symmetry), and each tile is multiplied with the ``(n + m) × (1 +
    n_permutations)`` matrix of side indicators, which gives the observed and
    all permuted statistics from one pass over the kernel. Memory is about
    ``8 × block_size²`` bytes plus ``12 × (n + m) × n_permutations``; time
    grows like ``(n + m)² × n_permutations`` (0.5 s at 5,000 + 5,000 rows and
    100 permutations on two idle CPU cores; torch's threads slow down several
    times when the cores are busy with other work, see
    :func:`torch.set_num_threads`). The arithmetic is float64: in float32,
    summing a tile row of 2,048 kernel values puts errors of about 3 % of
    the null distribution's spread on the statistics at 5,000 + 5,000 rows,
    and the tile size would change the p-value.

    Rows with a missing (NaN, None) or infinite value are dropped and counted
    in ``n_missing_reference`` / ``n_missing_current``.

    Parameters
    ----------
    alpha : float, default 0.05
        Significance level of :attr:`DetectorResult.drift_detected`.
    n_permutations : int, default 100
        Relabellings of the pooled sample behind the p-value.
    max_samples : int, default 5000
        Most rows of each side the test uses (see above).
    block_size : int, default 1024
        Side of the kernel tiles computed at once.
    standardize : bool, default True
        Divide each column by its standard deviation in the pooled sample.
    random_state : int, default 0
        Seed of the subsampling and of the permutations: with a fixed seed,
        the verdict is a function of the data (the same window gives the same
        decision). The reference subsample is drawn from the seed's stream
        ``[0, random_state]``, the rest of each :meth:`score` from
        ``[1, random_state]`` (:func:`numpy.random.default_rng`).
    device : {"cpu", "cuda", "auto"}, default "cpu"
        Where torch computes: ``"auto"`` picks CUDA when it is available.

    Attributes
    ----------
    reference_ : torch.Tensor
        The reference rows without missing values, cut to ``max_samples``
        (float64, on the chosen device).
    n_reference_ : int
        Reference rows without missing values (before subsampling).
    n_missing_reference_ : int
        Rows dropped from the reference for a missing or infinite value.
    n_features_in_ : int
        Number of columns.
    feature_names_in_ : numpy.ndarray or None
        The reference's column names when it was a DataFrame: a DataFrame
        scored later has its columns picked by these names.

    References
    ----------
    .. [1] Gretton, A., Borgwardt, K. M., Rasch, M. J., Schölkopf, B. and
       Smola, A. (2012). A kernel two-sample test. Journal of Machine
       Learning Research, 13, 723-773.
    .. [2] Garreau, D., Jitkrittum, W. and Kanagawa, M. (2017). Large sample
       analysis of the median heuristic. arXiv:1707.07269.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(7)
    >>> detector = MMDDetector(n_permutations=200).fit(rng.normal(size=(500, 5)))
    >>> detector
    MMDDetector(n_permutations=200)
    >>> detector.score(rng.normal(size=(300, 5))).drift_detected
    False
    >>> shifted = rng.normal(size=(300, 5))
    >>> shifted[:, 0] += 0.8
    >>> result = detector.score(shifted)
    >>> result.drift_detected, f"{result.p_value:.4f}", result.n_current_tested
    (True, '0.0050', 300)
    """

    test_name: ClassVar[str] = "mmd"
    _parameter_constraints: ClassVar[dict[str, Constraint]] = {
        "alpha": Interval(float, 0, 1, closed="neither"),
        "n_permutations": Interval(int, 1, None, closed="left"),
        "max_samples": Interval(int, 2, None, closed="left"),
        "block_size": Interval(int, 1, None, closed="left"),
        "standardize": Boolean(),
        "random_state": Interval(int, 0, None, closed="left"),
        "device": Options(("cpu", "cuda", "auto")),
    }

    def __init__(
        self,
        *,
        alpha: float = 0.05,
        n_permutations: int = 100,
        max_samples: int = 5000,
        block_size: int = 1024,
        standardize: bool = True,
        random_state: int = 0,
        device: Literal["cpu", "cuda", "auto"] = "cpu",
    ) -> None:
        self.alpha = alpha
        self.n_permutations = n_permutations
        self.max_samples = max_samples
        self.block_size = block_size
        self.standardize = standardize
        self.random_state = random_state
        self.device = device
        self._reset()

    def _torch_device(self) -> torch.device:
        import torch

        if self.device == "auto":
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        if self.device == "cuda" and not torch.cuda.is_available():
            raise InvalidParameterError.for_parameter(
                "device", type(self).__name__, "'cpu' or 'auto' where torch finds no CUDA device", self.device)
        return torch.device(self.device)

    def _fit(self, reference: Table) -> None:
        import torch

        device = self._torch_device()
        values, missing, names = _table(reference)
        rng = np.random.default_rng([0, self.random_state])
        self.reference_ = torch.tensor(_subsample(values, self.max_samples, rng), dtype=torch.float64,
                                          device=device)
        self.n_reference_ = int(values.shape[0])
        self.n_missing_reference_ = missing
        self.n_features_in_ = int(values.shape[1])
        self.feature_names_in_ = names

    def _score(self, current: Table) -> MMDResult:
        import torch

        device = self._torch_device()
        if isinstance(current, pd.DataFrame) and self.feature_names_in_ is not None:
            absent = [name for name in self.feature_names_in_ if name not in current.columns]
            if absent:
                raise ValueError(f"The current sample lacks the reference's columns {absent}.")
            current = current[list(self.feature_names_in_)]
        values, missing, _ = _table(current)
        if values.shape[1] != self.n_features_in_:
            raise ValueError(f"{type(self).__name__} was fitted on {self.n_features_in_} features; "
                             f"the current sample has {values.shape[1]}.")
        rng = np.random.default_rng([1, self.random_state])
        tested = _subsample(values, self.max_samples, rng)
        reference = self.reference_.to(device)
        n_ref, n_cur = int(reference.shape[0]), int(tested.shape[0])
        statistic = p_value = bandwidth = math.nan
        if n_ref >= 2 and n_cur >= 2:
            pooled = torch.cat([reference, torch.tensor(tested, dtype=torch.float64, device=device)])
            pooled = _centred(pooled, self.standardize)
            bandwidth = _median_bandwidth(pooled, rng)
            permutations = np.argsort(rng.random((self.n_permutations, n_ref + n_cur)), axis=1)
            statistics = mmd2_unbiased_permutations(pooled, n_ref, permutations, bandwidth, self.block_size)
            statistic = float(statistics[0])
            p_value = float((1 + np.count_nonzero(statistics[1:] >= statistics[0])) / (1 + self.n_permutations))
        return MMDResult(
            test=self.test_name, statistic=statistic, p_value=p_value, n_reference=self.n_reference_,
            n_current=int(values.shape[0]), drift_detected=bool(p_value < self.alpha),
            n_missing_reference=self.n_missing_reference_, n_missing_current=missing, bandwidth=bandwidth,
            n_reference_tested=n_ref, n_current_tested=n_cur, n_permutations=self.n_permutations,
        )

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        if "reference_" in state:  # pickles load on machines without the fitting device
            state["reference_"] = state["reference_"].cpu()
        return state


def mmd2_unbiased_permutations(pooled: torch.Tensor, n_first: int, permutations: np.ndarray, bandwidth: float,
                               block_size: int) -> np.ndarray:
    """Unbiased MMD² of the first ``n_first`` rows against the rest, then of each relabelling.

    ``permutations[p]`` is a permutation of the row indices; its first
    ``n_first`` entries are the first side of relabelling ``p``. Returns
    ``1 + len(permutations)`` statistics (float64), the observed one first.
    The Gaussian kernel is computed in tiles of ``block_size`` rows and
    columns, never as a whole matrix.

    With ``z`` the 0/1 indicator of the first side, ``K`` the kernel matrix
    (diagonal 1), ``r = K 1`` and ``T = 1ᵀ K 1``: the within-first sum is
    ``zᵀ K z``, the cross sum ``zᵀ r - zᵀ K z`` and the within-second sum
    ``T - 2 zᵀ r + zᵀ K z``; the diagonals (``n_first`` and ``n - n_first``
    ones) are taken off the within sums.

    >>> import torch
    >>> x = torch.tensor([[0.0], [1.0], [3.0], [4.0]])
    >>> stats = mmd2_unbiased_permutations(x, 2, np.array([[0, 2, 1, 3]]), 1.0, block_size=3)
    >>> np.round(stats, 4).tolist()
    [1.1341, -0.6521]
    """
    import torch

    n = int(pooled.shape[0])
    n_second = n - n_first
    indicators = np.zeros((1 + len(permutations), n), dtype=np.float32)
    indicators[0, :n_first] = 1.0
    rows = np.repeat(np.arange(1, 1 + len(permutations)), n_first)
    indicators[rows, np.asarray(permutations)[:, :n_first].ravel()] = 1.0
    # The indicators, and a column of ones: one product per tile gives the weighted and the plain row sums.
    z = torch.as_tensor(np.vstack([indicators, np.ones((1, n), dtype=np.float32)]).T.copy(), dtype=pooled.dtype,
                        device=pooled.device)
    scaled = pooled * math.sqrt(1.0 / (2.0 * bandwidth * bandwidth))  # so that k(x, y) = exp(-|x - y|²)
    squared_norms = (scaled * scaled).sum(dim=1)
    quadratic = torch.zeros(z.shape[1] - 1, dtype=torch.float64, device=pooled.device)
    weighted_row_sums = torch.zeros_like(quadratic)
    total = torch.zeros((), dtype=torch.float64, device=pooled.device)
    for start in range(0, n, block_size):
        stop = min(start + block_size, n)
        z_a = z[start:stop, :-1]
        for other in range(start, n, block_size):
            other_stop = min(other + block_size, n)
            kernel = _gaussian_tile(scaled[start:stop], scaled[other:other_stop], squared_norms[start:stop],
                                    squared_norms[other:other_stop], diagonal=other == start)
            products = kernel @ z[other:other_stop]  # K z_b for each relabelling, then K 1
            del kernel
            row_sums = products[:, -1]
            part = (z_a * products[:, :-1]).sum(dim=0).double()
            if other == start:
                quadratic += part
                weighted_row_sums += (z_a.T @ row_sums).double()
                total += row_sums.sum().double()
            else:  # the mirror tile (other, start) contributes the same by symmetry
                column_sums = products.sum(dim=0).double()  # 1ᵀ K z_b, then 1ᵀ K 1
                quadratic += 2.0 * part
                weighted_row_sums += (z_a.T @ row_sums).double() + column_sums[:-1]
                total += 2.0 * column_sums[-1]
    within_first = quadratic - n_first
    cross = weighted_row_sums - quadratic
    within_second = total - 2.0 * weighted_row_sums + quadratic - n_second
    mmd2 = (within_first / (n_first * (n_first - 1)) + within_second / (n_second * (n_second - 1))
            - 2.0 * cross / (n_first * n_second))
    return mmd2.cpu().numpy()


def _gaussian_tile(a: torch.Tensor, b: torch.Tensor, a_norms: torch.Tensor, b_norms: torch.Tensor, *,
                   diagonal: bool) -> torch.Tensor:
    """``exp(-|a_i - b_j|²)`` in one buffer; a tile on the diagonal (``a`` is ``b``) gets exact ones on it."""
    import torch

    kernel = torch.addmm(b_norms[None, :], a, b.T, beta=-1.0, alpha=2.0)  # 2 a·b - |b|²
    kernel.sub_(a_norms[:, None]).clamp_(max=0.0).exp_()
    if diagonal:
        kernel.fill_diagonal_(1.0)
    return kernel


def _centred(pooled: torch.Tensor, standardize: bool) -> torch.Tensor:
    """The pooled rows minus their mean, divided by each column's standard deviation (1 where it is 0)."""
    centred = pooled - pooled.mean(dim=0)
    if standardize:
        scale = centred.std(dim=0)
        centred = centred / scale.where(scale > 0, scale.new_ones(()))
    return centred


def _median_bandwidth(pooled: torch.Tensor, rng: np.random.Generator) -> float:
    """Median distance between distinct rows of at most ``BANDWIDTH_SAMPLES`` pooled rows (drawn at random)."""
    import torch

    n = int(pooled.shape[0])
    rows = pooled
    if n > BANDWIDTH_SAMPLES:
        rows = pooled[torch.as_tensor(np.sort(rng.choice(n, BANDWIDTH_SAMPLES, replace=False)), device=pooled.device)]
    distances = torch.pdist(rows.double())
    median = float(distances.median()) if distances.numel() else 0.0
    if median > 0:
        return median
    positive = distances[distances > 0]  # mostly tied rows: the median of the distinct distances
    return float(positive.median()) if positive.numel() else 1.0


def _subsample(values: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    if values.shape[0] <= size:
        return values
    return values[np.sort(rng.choice(values.shape[0], size, replace=False))]


def _table(values: Table) -> tuple[np.ndarray, int, np.ndarray | None]:
    """The rows as a 2-D float array without missing or infinite values, how many rows were dropped, the names.

    >>> _table([[1.0, 2.0], [None, 3.0], [4.0, 5.0]])[:2]
    (array([[1., 2.],
           [4., 5.]]), 1)
    """
    names = None
    if isinstance(values, pd.DataFrame):
        names = np.asarray(values.columns, dtype=object)
        frame = values
    else:
        array = np.asarray(values)
        if array.ndim == 1:
            array = array.reshape(-1, 1)
        if array.ndim != 2:
            raise ValueError(f"A sample must be a table (2-D: rows by features); got {array.ndim} dimensions.")
        if array.dtype.kind in "biuf":
            return _finite_rows(array.astype(float, copy=False), names)
        frame = pd.DataFrame(array)
    try:
        numeric = frame.apply(pd.to_numeric)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"MMDDetector needs numeric columns: {exc}") from exc
    return _finite_rows(numeric.to_numpy(dtype=float, na_value=np.nan), names)


def _finite_rows(array: np.ndarray, names: np.ndarray | None) -> tuple[np.ndarray, int, np.ndarray | None]:
    keep = np.isfinite(array).all(axis=1)
    dropped = int(array.shape[0] - keep.sum())
    return (array if dropped == 0 else array[keep]), dropped, names
