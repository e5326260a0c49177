"""Corrections for testing many features at once.

Who calls it: the drift sensor, which tests every feature of a model each
tick. Without a correction, 50 clean features tested at 0.05 raise at least one
false alarm 93% of the time; Benjamini-Hochberg keeps the expected share of
false discoveries at the chosen rate instead.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from mape.errors import InvalidParameterError


def benjamini_hochberg(p_values: npt.ArrayLike) -> np.ndarray:
    """Benjamini-Hochberg adjusted p-values (q-values), in the order given.

    The q-value of the i-th smallest of m p-values is
    ``min over j >= i of p_(j) * m / j``, capped at 1, so q-values are
    monotone in the p-values. Rejecting every hypothesis with ``q <= alpha``
    controls the false discovery rate at ``alpha`` for independent (or
    positively dependent) tests. NaN p-values (tests that could not run) get a
    NaN q-value and do not count in m.

    Parameters
    ----------
    p_values : array_like
        P-values in ``[0, 1]`` or NaN, any shape.

    Returns
    -------
    numpy.ndarray
        q-values, same shape as ``p_values``.

    Raises
    ------
    InvalidParameterError
        A p-value lies outside ``[0, 1]``.

    References
    ----------
    .. [1] Benjamini, Y., & Hochberg, Y. (1995). Controlling the false discovery
       rate: a practical and powerful approach to multiple testing. Journal of
       the Royal Statistical Society, Series B, 57(1), 289-300.

    Examples
    --------
    >>> benjamini_hochberg([0.01, 0.04, 0.03, 0.005])
    array([0.02, 0.04, 0.04, 0.02])
    >>> benjamini_hochberg([0.02, float("nan"), 0.5])
    array([0.04,  nan, 0.5 ])
    """
    p = np.asarray(p_values, dtype=float)
    present = ~np.isnan(p)
    if np.any((p[present] < 0) | (p[present] > 1)):
        raise InvalidParameterError.for_parameter(
            "p_values", "benjamini_hochberg", "an array of probabilities in [0, 1] or NaN", p_values
        )
    q = np.full(p.shape, np.nan)
    tested = p[present]
    m = tested.size
    if m == 0:
        return q
    order = np.argsort(tested, kind="stable")
    scaled = tested[order] * m / np.arange(1, m + 1)
    adjusted = np.minimum(np.minimum.accumulate(scaled[::-1])[::-1], 1.0)
    ranked = np.empty(m)
    ranked[order] = adjusted
    q[present] = ranked
    return q
