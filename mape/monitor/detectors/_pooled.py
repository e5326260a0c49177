"""Two sorted samples merged once, and the statistics read off the merge: KS, Cramér-von Mises, Wasserstein-1.

Who calls it: the numeric detectors (:mod:`~mape.monitor.detectors.ks`,
:mod:`~mape.monitor.detectors.cvm`) on every score, and
:func:`mape.monitor.detectors.effect_size.wasserstein_normalised`. The
reference is sorted once at fit time and the current sample once per score;
one stable merge of the two sorted runs (linear time: numpy's timsort finds
the two runs) then gives every statistic in a few passes over ``n + m``
numbers, where scipy re-sorts and searches both samples for each statistic.
"""

from __future__ import annotations

import numpy as np


class Pooled:
    """The pooled sample of a sorted reference and a sorted current sample.

    Ties keep reference values before current ones (a stable merge). The
    running counts at a position equal the empirical distribution functions
    there only at the last position of a run of equal values; every statistic
    below accounts for that.

    Parameters
    ----------
    reference, current : numpy.ndarray
        Sorted, non-empty float samples without NaNs.

    Examples
    --------
    >>> pooled = Pooled(np.array([1.0, 2.0, 3.0, 4.0]), np.array([3.5, 4.5]))
    >>> pooled.values
    array([1. , 2. , 3. , 3.5, 4. , 4.5])
    >>> pooled.ks(), pooled.wasserstein()
    (0.75, 1.5)
    """

    __slots__ = ("_distinct", "_gap", "_steps", "from_reference", "m", "n", "values")

    def __init__(self, reference: np.ndarray, current: np.ndarray) -> None:
        self.n, self.m = int(reference.size), int(current.size)
        both = np.concatenate([reference, current])
        order = np.argsort(both, kind="stable")
        self.values: np.ndarray = both[order]
        self.from_reference: np.ndarray = order < self.n
        self._gap: np.ndarray | None = None
        self._steps: np.ndarray | None = None
        self._distinct: tuple[np.ndarray, bool] | None = None

    def steps(self) -> np.ndarray:
        """``values[k + 1] - values[k]``: zero inside a run of ties."""
        if self._steps is None:
            self._steps = np.diff(self.values)
        return self._steps

    def distinct(self) -> tuple[np.ndarray, bool]:
        """``steps() > 0`` (the last position of each run of ties, but the final one), and whether it is all true."""
        if self._distinct is None:
            mask = self.steps() > 0
            self._distinct = (mask, bool(mask.all()))
        return self._distinct

    def gap(self) -> np.ndarray:
        """``F_reference - F_current`` from the running counts at each pooled position."""
        if self._gap is None:
            # seen_reference / n - (k + 1 - seen_reference) / m = seen_reference * (1/n + 1/m) - (k + 1) / m
            size = self.n + self.m
            seen_reference = np.cumsum(self.from_reference, dtype=np.int32 if size < 2**31 else np.int64)
            gap = seen_reference * (1.0 / self.n + 1.0 / self.m)
            seen = np.arange(1.0, size + 1.0)
            seen *= 1.0 / self.m
            gap -= seen
            self._gap = gap
        return self._gap

    def ks(self) -> float:
        """Largest distance between the two empirical distribution functions (two-sided KS statistic)."""
        gap = self.gap()[:-1]  # the gap at the final position is 0
        distinct, no_ties = self.distinct()
        at_values = gap if no_ties else gap[distinct]
        if at_values.size == 0:
            return 0.0
        return float(max(at_values.max(), -at_values.min()))

    def wasserstein(self) -> float:
        """Wasserstein-1 distance: the area between the two empirical distribution functions.

        Inside a run of ties the step is zero, so the running counts need no correction.
        """
        area = np.abs(self.gap()[:-1])
        area *= self.steps()
        return float(area.sum())  # not np.dot: BLAS threads woken for one dot product cost more than they save

    def cvm(self) -> float:
        """The two-sample Cramér-von Mises statistic ``T`` (Anderson 1962), as scipy computes it.

        Without ties ``T = nm/N^2 * sum_k (F_n - G_m)^2`` over the pooled
        sample (one pass over :meth:`gap`, which the Wasserstein distance
        shares); with ties, ``T = U / (nmN) - (4nm - 1) / (6N)`` from the
        mid-ranks (:meth:`cvm_u`).

        >>> round(Pooled(np.array([1.0, 2.0, 3.0]), np.array([4.0, 5.0])).cvm(), 6)
        0.433333
        >>> round(Pooled(np.array([1.0, 2.0, 2.0]), np.array([2.0, 5.0])).cvm(), 6)
        0.2
        """
        n, m = float(self.n), float(self.m)
        if self.distinct()[1]:
            gap = self.gap()
            return float(n * m / (n + m) ** 2 * np.sum(gap * gap))
        k, size = n * m, n + m
        return float(self.cvm_u() / (k * size) - (4.0 * k - 1.0) / (6.0 * size))

    def cvm_u(self) -> float:
        """Anderson's ``U = n * sum (r_i - i)^2 + m * sum (s_j - j)^2`` with mid-ranks for ties.

        ``r_i`` is the rank in the pooled sample of the ``i``-th smallest
        reference value, ``s_j`` that of the ``j``-th smallest current value.
        """
        distinct, no_ties = self.distinct()
        size = self.n + self.m
        if no_ties:
            ranks = np.arange(1.0, size + 1.0)
        else:  # mid-rank of each run of ties: (first + last) / 2, 1-based
            starts = np.flatnonzero(np.concatenate(([True], distinct)))
            ends = np.append(starts[1:], size)
            mid = (starts + ends + 1) / 2.0
            ranks = np.repeat(mid, ends - starts)
        reference_ranks = ranks[self.from_reference] - np.arange(1.0, self.n + 1.0)
        current_ranks = ranks[~self.from_reference] - np.arange(1.0, self.m + 1.0)
        return float(self.n * np.sum(reference_ranks * reference_ranks) + self.m * np.sum(current_ranks * current_ranks))
