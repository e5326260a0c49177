"""Effect sizes of drift: how far the current distribution moved, whatever the sample size.

Who calls it: the detectors, which report one effect size next to each test
(their ``effect`` parameter picks which), and through them the drift sensor,
which calls a feature drifted only when the shift is significant *and* at
least its effect floor. A p-value alone answers "is there any difference?",
and on a million rows the answer is yes for a 0.02-sigma shift nobody cares
about; an effect size answers "how big is it?" on a scale that does not grow
with ``n``.

Three effect sizes, all zero for identical distributions:

- ``"wasserstein"`` (:func:`wasserstein_normalised`): the Wasserstein-1
  distance (the area between the two distribution functions) in units of the
  reference's standard deviation. A pure location shift by ``d`` has distance
  exactly ``d``, so 0.1 reads "moved by a tenth of a standard deviation".
  Numeric features only; uses every value, no binning.
- ``"psi"`` (:func:`psi`): the population stability index, the symmetric
  Kullback-Leibler divergence between binned proportions (natural log).
- ``"js"`` (:func:`jensen_shannon`): the Jensen-Shannon distance (square root
  of the divergence, base 2), in [0, 1].

PSI and JS compare counts on a binning fitted on the reference:
numeric features use :func:`quantile_edges` (20 reference-quantile bins by
default, open-ended outer bins), categorical features one bin per reference
category plus one for every category the reference never saw
(:func:`category_bin_counts`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from mape.monitor.detectors._pooled import Pooled

Effect = Literal["wasserstein", "psi", "js"]

#: Every effect size a detector can report.
EFFECTS: tuple[str, ...] = ("wasserstein", "psi", "js")

#: Default number of reference-quantile bins of a numeric feature for PSI and JS.
DEFAULT_BINS = 20

#: Smallest proportion PSI uses for a bin, so an empty bin on one side gives a large, finite term.
PSI_EPSILON = 1e-4


def quantile_edges(sorted_reference: np.ndarray, bins: int = DEFAULT_BINS) -> np.ndarray:
    """Inner bin edges at the reference's ``1/bins, ..., (bins-1)/bins`` quantiles, duplicates removed.

    The bins are ``(-inf, e_1], (e_1, e_2], ..., (e_k, inf)``: the outer bins
    are open-ended, so current values outside the reference's range still
    count. Quantiles are interpolated linearly (numpy's default method).
    Duplicate edges (a value holding more than ``1/bins`` of the reference,
    such as a spike at zero) are merged, so such a feature has fewer bins.

    >>> quantile_edges(np.arange(1.0, 11.0), bins=4)
    array([3.25, 5.5 , 7.75])
    >>> quantile_edges(np.array([0.0] * 7 + [1.0, 2.0, 3.0]), bins=4)  # a spike at 0: 3 bins, not 4
    array([0.  , 0.75])
    """
    if sorted_reference.size == 0:
        return np.empty(0)
    positions = np.arange(1, bins) / bins * (sorted_reference.size - 1)
    below = np.floor(positions).astype(np.intp)
    above = np.minimum(below + 1, sorted_reference.size - 1)
    fraction = positions - below
    edges = sorted_reference[below] + fraction * (sorted_reference[above] - sorted_reference[below])
    return np.unique(edges)


def bin_counts(values: np.ndarray, edges: np.ndarray, *, assume_sorted: bool = False) -> np.ndarray:
    """How many values fall in each bin ``(-inf, e_1], ..., (e_k, inf)``: ``len(edges) + 1`` counts.

    With ``assume_sorted=True`` the values must be sorted and the count costs
    ``len(edges)`` binary searches, whatever the sample size.

    >>> bin_counts(np.array([0.5, 1.0, 1.5, 7.0]), np.array([1.0, 2.0]))
    array([2, 1, 1])
    """
    if not assume_sorted:
        return np.bincount(np.searchsorted(edges, values, side="left"), minlength=edges.size + 1)
    cuts = np.searchsorted(values, edges, side="right")
    return np.diff(np.concatenate(([0], cuts, [values.size])))


def category_bin_counts(reference_counts: Mapping[Any, int],
                        current_counts: Mapping[Any, int]) -> tuple[np.ndarray, np.ndarray]:
    """Counts per reference category, then one bin for all categories the reference never saw.

    >>> category_bin_counts({"a": 5, "b": 3}, {"b": 4, "c": 1, "d": 2})
    (array([5, 3, 0]), array([0, 4, 3]))
    """
    reference = np.fromiter((*reference_counts.values(), 0), dtype=np.int64, count=len(reference_counts) + 1)
    current = np.fromiter((current_counts.get(category, 0) for category in reference_counts), dtype=np.int64,
                          count=len(reference_counts))
    unseen = sum(count for category, count in current_counts.items() if category not in reference_counts)
    return reference, np.append(current, unseen)


def _proportions(reference_counts: npt.ArrayLike, current_counts: npt.ArrayLike) -> tuple[np.ndarray, np.ndarray] | None:
    reference = np.asarray(reference_counts, dtype=float)
    current = np.asarray(current_counts, dtype=float)
    if reference.shape != current.shape:
        raise ValueError(f"the two count vectors differ in length: {reference.size} and {current.size} bins")
    reference_total, current_total = reference.sum(), current.sum()
    if reference_total <= 0 or current_total <= 0:
        return None
    return reference / reference_total, current / current_total


def psi(reference_counts: npt.ArrayLike, current_counts: npt.ArrayLike, *, epsilon: float = PSI_EPSILON) -> float:
    """Population stability index ``sum (c_i - r_i) * ln(c_i / r_i)`` of binned proportions.

    Proportions below ``epsilon`` (default ``1e-4``) are raised to it, so an
    empty bin on one side contributes a large but finite term: a bin holding
    5% of one sample and nothing of the other adds ``(0.05 - 1e-4) * ln(500)``,
    about 0.31. The rule of thumb of credit scoring reads PSI below 0.1 as no
    significant change, 0.1 to 0.25 as moderate, above 0.25 as major. NaN
    when either sample is empty.

    Examples
    --------
    >>> round(psi([50, 30, 20], [40, 30, 30]), 6)  # -0.1 * ln(0.8) + 0.1 * ln(1.5)
    0.062861
    >>> psi([10, 10], [10, 10])
    0.0
    """
    proportions = _proportions(reference_counts, current_counts)
    if proportions is None:
        return math.nan
    reference, current = (np.maximum(p, epsilon) for p in proportions)
    return float(np.sum((current - reference) * np.log(current / reference)))


def jensen_shannon(reference_counts: npt.ArrayLike, current_counts: npt.ArrayLike) -> float:
    """Jensen-Shannon distance (base 2) of binned proportions: ``sqrt(JSD)``, in ``[0, 1]``.

    ``JSD = (KL(r || a) + KL(c || a)) / 2`` with ``a = (r + c) / 2`` and
    logarithms base 2; 1 means the two samples share no bin. The square root
    is a metric (the triangle inequality holds) and equals
    :func:`scipy.spatial.distance.jensenshannon` with ``base=2``. Empty bins
    need no epsilon. NaN when either sample is empty.

    Examples
    --------
    >>> round(jensen_shannon([50, 30, 20], [40, 30, 30]), 6)
    0.106199
    >>> jensen_shannon([3, 0], [0, 5])
    1.0
    """
    proportions = _proportions(reference_counts, current_counts)
    if proportions is None:
        return math.nan
    reference, current = proportions
    average = (reference + current) / 2.0
    divergence = 0.0
    for p in (reference, current):
        present = p > 0
        divergence += 0.5 * float(np.sum(p[present] * np.log2(p[present] / average[present])))
    return math.sqrt(min(max(divergence, 0.0), 1.0))


def reference_spread(sorted_reference: np.ndarray) -> float:
    """The scale of :func:`wasserstein_normalised`: the reference's standard deviation (``ddof=0``).

    The standard deviation, not the robust ``IQR / 1.349``: the IQR is zero
    for any feature with more than half its mass on one value (zero-inflated
    counts, flags), which is common in tabular data, while the standard
    deviation is zero only for a constant reference. ``ddof=0`` is the
    convention of Evidently's normed Wasserstein distance, whose default
    threshold is 0.1 as ours.
    """
    return float(np.std(sorted_reference)) if sorted_reference.size else math.nan


def scaled(distance: float, spread: float) -> float:
    """``distance / spread``; against a constant reference (spread 0), 0 if nothing moved and ``inf`` otherwise."""
    if spread > 0:
        return distance / spread
    return 0.0 if distance == 0 else math.inf


def wasserstein_normalised(sorted_reference: np.ndarray, current: npt.ArrayLike) -> float:
    """Wasserstein-1 distance between the samples divided by the reference's standard deviation.

    Equals ``scipy.stats.wasserstein_distance(reference, current) /
    numpy.std(reference)`` (to rounding), from one merge of the sorted samples.
    For a constant reference the ratio is 0 when the current sample is the
    same constant and ``inf`` otherwise; NaN when either sample is empty.

    Parameters
    ----------
    sorted_reference : numpy.ndarray
        The reference sample, sorted, without NaNs.
    current : array_like
        The current sample, any order, without NaNs.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> reference = np.sort(rng.normal(0.0, 2.0, size=100_000))
    >>> round(wasserstein_normalised(reference, rng.normal(0.5, 2.0, size=100_000)), 2)
    0.25
    """
    current_sorted = np.sort(np.asarray(current, dtype=float))
    if sorted_reference.size == 0 or current_sorted.size == 0:
        return math.nan
    return scaled(Pooled(sorted_reference, current_sorted).wasserstein(), reference_spread(sorted_reference))
