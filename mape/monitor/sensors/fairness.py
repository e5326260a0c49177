"""Fairness of a binary classifier's decisions across the groups of protected attributes, with fairlearn.

Who calls it: the Monitor stage, on the labelled window of a model with a
``fairness`` section (:class:`mape.config.FairnessConfig`): predictions joined
to their labels, with the sensitive columns. :func:`fairness_observations`
turns the report into the ``fairness.*`` observations that policies read
(``policies/fairness-guard.yaml``).

**Attributes and groups.** Each sensitive column is an attribute; with
``intersections`` and two or more columns, their intersection is one more
attribute, named ``"sex & age_band"``, whose groups are named ``"F & 18-30"``
(only the full intersection of all columns, not every pair). Group names are
the values as text; a missing value is its own group, ``"<missing>"``.

**Per group** (fairlearn's :class:`~fairlearn.metrics.MetricFrame`): the
size, selection rate, true and false positive rate and accuracy. A group
with fewer than ``min_group_size`` rows is *too small*: only its size is
reported, it is listed in :attr:`FairnessReport.too_small`, and it takes no
part in any gap. An attribute with fewer than two groups large enough has no
gaps, and a reason. The true positive rate of a group without positive labels
is unknown (``None``), as is the false positive rate of a group without
negative labels; such a group takes no part in the gaps that need the rate.
(fairlearn counts the rate as 0, which reads as a gap that is not there.)

**Gaps**, between the groups large enough, with fairlearn's functions:
``demographic_parity_difference`` and ``demographic_parity_ratio`` (selection
rates), ``equalized_odds_difference`` (the larger of the true and false
positive rate gaps), ``equal_opportunity_difference`` (the true positive rate
gap) and ``accuracy_difference`` (``MetricFrame.difference()`` of accuracy).
fairlearn runs on the window's contingency table (one row per group, label
and prediction, weighted by its count): every metric is a weighted mean of 0/1
values, so the numbers are those of the rows, at a cost that does not grow
with the window (fairlearn's Python overhead is about 10 µs per row and metric).

**Confidence intervals**: a percentile bootstrap over rows, stratified by
group (every resample keeps each group's size), ``n_bootstrap`` resamples
from ``random_state``. The gaps depend on the rows only through each group's
counts of the four (label, prediction) pairs, and resampling a group's ``n``
rows with replacement draws those counts from a multinomial distribution: the
sensor draws the counts (``Generator.multinomial``), which *is* the row
bootstrap, at a cost of ``n_bootstrap`` × groups, not rows. A gap is the
largest absolute difference between two groups, and the percentile interval
of that maximum never reaches 0 (the bootstrap of ``|d|`` lies above 0 even
when ``d`` is 0), so a fair model would never look fair. Instead the sensor
bootstraps the signed pairwise differences and takes simultaneous percentile
intervals for all of them at level ``confidence`` (Mandel and Betensky,
2008); the interval of the gap is what those intervals allow: from the largest
distance of any pair's interval from 0 to the largest absolute value within
them. With two groups this is the ordinary percentile interval of the
difference, folded at 0. The ratio is the same on log selection rates. A
resample in which a group has no positive (negative) labels keeps that group's
true (false) positive rate differences at their observed values.

**Summary** (the worst over attributes, one number per gap; these are the
declared ``fairness`` context fields): the largest of each difference and the
smallest ratio; ``n_groups``, the number of (attribute, group) pairs that
entered a gap (every group of an attribute with a gap, counted once per
attribute, the intersection included); ``smallest_group``, the rows of the
smallest of those groups, so ``fairness.smallest_group >= 50`` means every
group behind every gap had at least 50 rows (too small groups are left out of
the gaps, so they do not lower it); and the pessimistic ends of the intervals,
``<difference>_upper`` (the largest upper end) and
``demographic_parity_ratio_lower`` (the smallest lower end), for policies that
want "confidently below the bound" (``..._upper <= 0.10``). They are valid
bounds of the worst gap: the worst attribute's interval covers its gap with
the stated confidence. No summary lower bound is given: the largest of several
lower ends would need a correction for multiplicity.

**Observations** (sensor ``fairness``; a value that is unknown is not
written, never written as 0):

- ``fairness.<field>``, labels ``{}``: the summary fields above;
- ``fairness.gap.<gap>``, ``fairness.gap.<gap>.ci_low`` and
  ``fairness.gap.<gap>.ci_high``, labels ``{"attribute": a}``: each
  attribute's gaps and interval ends;
- ``fairness.group.size`` and ``fairness.group.<metric>`` (selection_rate,
  true_positive_rate, false_positive_rate, accuracy), labels
  ``{"attribute": a, "group": g}``; a too small group has only its size.

References
----------
Hardt, M., Price, E. and Srebro, N. (2016). Equality of opportunity in
supervised learning. NeurIPS 29.

Mandel, M. and Betensky, R. A. (2008). Simultaneous confidence intervals based
on the percentile bootstrap approach. Computational Statistics & Data
Analysis 52(4), 2158-2165.

Weerts, H., Dudík, M., Edgar, R., Jalali, A., Lutz, R. and Madaio, M. (2023).
Fairlearn: Assessing and improving fairness of AI systems. JMLR 24(257).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, ClassVar, Self

import numpy as np
import pandas as pd
from fairlearn import metrics as flm
from sklearn.metrics import accuracy_score

from knowledge.tables import Observation
from mape.config import FairnessConfig
from mape.monitor.detectors._params import Boolean, Constraint, Interval, validate_params
from mape.monitor.sensors.performance import version_numbers

__all__ = ["GAPS", "GROUP_METRICS", "SUMMARY_FIELDS", "AttributeReport", "FairnessReport", "FairnessSensor", "Gap",
           "GroupMetrics", "fairness_observations"]

#: The gaps of each attribute, by their fairlearn names.
GAPS: tuple[str, ...] = ("demographic_parity_difference", "demographic_parity_ratio", "equalized_odds_difference",
                         "equal_opportunity_difference", "accuracy_difference")
#: The rates of each group large enough.
GROUP_METRICS: tuple[str, ...] = ("selection_rate", "true_positive_rate", "false_positive_rate", "accuracy")
#: The summary a policy reads as ``fairness.<field>`` (declared in :mod:`mape.plan.fields`).
SUMMARY_FIELDS: tuple[str, ...] = (*GAPS, "n_groups", "smallest_group", "demographic_parity_difference_upper",
                                   "demographic_parity_ratio_lower", "equalized_odds_difference_upper",
                                   "equal_opportunity_difference_upper", "accuracy_difference_upper")
#: The group of rows whose sensitive value is missing.
MISSING = "<missing>"
#: Above this many groups large enough, an attribute's gaps have no interval (the pairs grow as its square).
MAX_GROUPS_WITH_INTERVALS = 200

# The four (label, prediction) pairs, in the order of the count arrays: outcome = 2 * label + prediction.
_TN, _FP, _FN, _TP = 0, 1, 2, 3


@dataclass(frozen=True)
class Gap:
    """One gap between the groups of an attribute, with its bootstrap interval (``None`` without one)."""

    value: float
    ci_low: float | None = None
    ci_high: float | None = None

    def __str__(self) -> str:
        if self.ci_low is None or self.ci_high is None:
            return f"{self.value:.3f}"
        return f"{self.value:.3f} [{self.ci_low:.3f}, {self.ci_high:.3f}]"


@dataclass(frozen=True)
class GroupMetrics:
    """One group of an attribute; the rates are ``None`` for a group too small, or where undefined.

    Attributes
    ----------
    group : str
    size : int
        Labelled rows of the group.
    selection_rate, true_positive_rate, false_positive_rate, accuracy : float or None
        From fairlearn; a true (false) positive rate needs a positive (negative) label in the group.
    too_small : bool
        Fewer than ``min_group_size`` rows: in no gap.
    """

    group: str
    size: int
    selection_rate: float | None = None
    true_positive_rate: float | None = None
    false_positive_rate: float | None = None
    accuracy: float | None = None
    too_small: bool = False


@dataclass(frozen=True)
class AttributeReport:
    """The groups of one protected attribute (or intersection) and the gaps between them.

    Attributes
    ----------
    attribute : str
        A sensitive column, or the intersection ``"a & b"``.
    groups : tuple of GroupMetrics
        Every group, too small ones included, by name.
    gaps : dict of str to Gap
        The gaps of :data:`GAPS` that are defined; empty with a ``reason``.
    reason : str or None
        Why the attribute has no gaps.
    """

    attribute: str
    groups: tuple[GroupMetrics, ...]
    gaps: Mapping[str, Gap] = field(default_factory=dict)
    reason: str | None = None

    @property
    def compared(self) -> tuple[GroupMetrics, ...]:
        """The groups behind the gaps (none without gaps)."""
        return tuple(g for g in self.groups if not g.too_small) if self.gaps else ()

    def __str__(self) -> str:
        if not self.gaps:
            return f"{self.attribute}: no gap ({self.reason})"
        return f"{self.attribute}: " + ", ".join(f"{name} {gap}" for name, gap in self.gaps.items())


@dataclass(frozen=True)
class FairnessReport:
    """The fairness of one labelled window: per attribute, and summarised as the worst over attributes.

    The summary fields are properties (see :data:`SUMMARY_FIELDS` and
    :meth:`summary`); each is ``None`` when no attribute has that gap.

    Attributes
    ----------
    n_rows : int
        Labelled rows scored (after the version filter, without missing labels or predictions).
    attributes : tuple of AttributeReport
        The sensitive columns in the configured order, then their intersection.
    too_small : tuple of (attribute, group, n)
        The groups left out of the gaps for having fewer than ``min_group_size`` rows.
    confidence : float
        Level of the intervals.
    reason : str or None
        Why nothing was measured (a missing column, no rows, labels that are not 0/1).
    """

    n_rows: int
    attributes: tuple[AttributeReport, ...] = ()
    too_small: tuple[tuple[str, str, int], ...] = ()
    confidence: float = 0.95
    reason: str | None = None

    def attribute(self, name: str) -> AttributeReport:
        """The report of one attribute (a sensitive column or ``"a & b"``); ``KeyError`` if there is none."""
        for attribute in self.attributes:
            if attribute.attribute == name:
                return attribute
        raise KeyError(name)

    def _gaps(self, name: str) -> list[Gap]:
        return [a.gaps[name] for a in self.attributes if name in a.gaps]

    def _worst(self, name: str) -> float | None:
        values = [gap.value for gap in self._gaps(name)]
        if not values:
            return None
        return min(values) if name == "demographic_parity_ratio" else max(values)

    def _bound(self, name: str, end: str) -> float | None:
        """The pessimistic end over attributes; unknown if any attribute with the gap has no interval."""
        ends = [getattr(gap, end) for gap in self._gaps(name)]
        if not ends or any(value is None for value in ends):
            return None
        return min(ends) if end == "ci_low" else max(ends)

    @property
    def demographic_parity_difference(self) -> float | None:
        return self._worst("demographic_parity_difference")

    @property
    def demographic_parity_ratio(self) -> float | None:
        return self._worst("demographic_parity_ratio")

    @property
    def equalized_odds_difference(self) -> float | None:
        return self._worst("equalized_odds_difference")

    @property
    def equal_opportunity_difference(self) -> float | None:
        return self._worst("equal_opportunity_difference")

    @property
    def accuracy_difference(self) -> float | None:
        return self._worst("accuracy_difference")

    @property
    def demographic_parity_difference_upper(self) -> float | None:
        return self._bound("demographic_parity_difference", "ci_high")

    @property
    def demographic_parity_ratio_lower(self) -> float | None:
        return self._bound("demographic_parity_ratio", "ci_low")

    @property
    def equalized_odds_difference_upper(self) -> float | None:
        return self._bound("equalized_odds_difference", "ci_high")

    @property
    def equal_opportunity_difference_upper(self) -> float | None:
        return self._bound("equal_opportunity_difference", "ci_high")

    @property
    def accuracy_difference_upper(self) -> float | None:
        return self._bound("accuracy_difference", "ci_high")

    @property
    def n_groups(self) -> int | None:
        """(attribute, group) pairs behind the gaps; ``None`` when nothing was measured."""
        if self.reason is not None:
            return None
        return sum(len(a.compared) for a in self.attributes)

    @property
    def smallest_group(self) -> int | None:
        """Rows of the smallest group behind any gap; ``None`` without gaps."""
        sizes = [g.size for a in self.attributes for g in a.compared]
        return min(sizes) if sizes else None

    def summary(self) -> dict[str, float]:
        """The known summary fields, as policies read them (``fairness.<field>``)."""
        values = {name: getattr(self, name) for name in SUMMARY_FIELDS}
        return {name: float(value) for name, value in values.items() if value is not None}

    def __str__(self) -> str:
        if self.reason is not None:
            return f"no fairness metrics ({self.reason})"
        small = f"; {len(self.too_small)} groups too small" if self.too_small else ""
        if self.demographic_parity_difference is None:
            reasons = "; ".join(str(a) for a in self.attributes)
            return f"no fairness gap on {self.n_rows} labelled ({reasons}){small}"
        eo = self.equalized_odds_difference
        odds = "" if eo is None else f", equalized odds difference {eo:.3f}"
        return (f"demographic parity difference {self.demographic_parity_difference:.3f}{odds} over "
                f"{self.n_groups} groups of {sum(1 for a in self.attributes if a.gaps)} attributes on "
                f"{self.n_rows} labelled{small}")


@dataclass(frozen=True)
class _ColumnNames(Constraint):
    """A non-empty list of distinct, non-empty column names."""

    def is_satisfied_by(self, value: Any) -> bool:
        return (isinstance(value, (list, tuple)) and len(value) > 0
                and all(isinstance(v, str) and v for v in value) and len(set(value)) == len(value))

    def __str__(self) -> str:
        return "a non-empty list of distinct column names"


@dataclass(frozen=True)
class _Seed(Constraint):
    """A non-negative int, or ``None`` for fresh entropy."""

    def is_satisfied_by(self, value: Any) -> bool:
        return value is None or Interval(int, 0, None, closed="left").is_satisfied_by(value)

    def __str__(self) -> str:
        return "an int in [0, inf) or None"


class FairnessSensor:
    """Compares a binary classifier's decisions across the groups of protected attributes.

    Parameters
    ----------
    sensitive : list of str
        The protected attributes: columns of the labelled window.
    label_column, prediction_column : str
        Labels and predictions, 0 or 1 (or booleans).
    min_group_size : int, default 50
        Groups with fewer rows are reported as too small and take no part in the gaps.
    intersections : bool, default True
        With two or more sensitive columns, also compare the groups of their intersection.
    n_bootstrap : int, default 200
        Bootstrap resamples for the intervals; 0: no intervals.
    confidence : float, default 0.95
        Level of the (simultaneous) intervals.
    random_state : int or None, default 0
        Seed of the resamples; ``None``: different every time.
    version_column : str, optional
        Column naming the serving version; with a ``version`` given to :meth:`score`, only its rows are scored.

    Examples
    --------
    A model that selects 30 % of women and 50 % of men:

    >>> rng = np.random.default_rng(0)
    >>> sex = np.repeat(["F", "M"], 1000)
    >>> window = pd.DataFrame({"sex": sex, "label": rng.integers(0, 2, 2000),
    ...                        "prediction": (rng.uniform(size=2000) < np.where(sex == "F", 0.3, 0.5)).astype(int)})
    >>> sensor = FairnessSensor(sensitive=["sex"], label_column="label", prediction_column="prediction")
    >>> report = sensor.score(window)
    >>> print(report.attribute("sex").gaps["demographic_parity_difference"])
    0.192 [0.154, 0.228]
    >>> report.summary()["smallest_group"], report.too_small
    (1000.0, ())
    """

    _parameter_constraints: ClassVar[dict[str, Constraint]] = {
        "sensitive": _ColumnNames(),
        "min_group_size": Interval(int, 1, None, closed="left"),
        "intersections": Boolean(),
        "n_bootstrap": Interval(int, 0, None, closed="left"),
        "confidence": Interval(float, 0, 1, closed="neither"),
        "random_state": _Seed(),
    }

    def __init__(self, *, sensitive: Sequence[str], label_column: str, prediction_column: str,
                 min_group_size: int = 50, intersections: bool = True, n_bootstrap: int = 200,
                 confidence: float = 0.95, random_state: int | None = 0, version_column: str | None = None) -> None:
        self.sensitive = sensitive
        self.label_column = label_column
        self.prediction_column = prediction_column
        self.min_group_size = min_group_size
        self.intersections = intersections
        self.n_bootstrap = n_bootstrap
        self.confidence = confidence
        self.random_state = random_state
        self.version_column = version_column
        validate_params(type(self).__name__, self._parameter_constraints,
                        {name: getattr(self, name) for name in self._parameter_constraints})

    @classmethod
    def from_config(cls, config: FairnessConfig, *, label_column: str, prediction_column: str,
                    version_column: str | None = None, random_state: int | None = 0) -> Self:
        """The sensor a model's ``fairness`` settings describe (the window length is the caller's)."""
        return cls(sensitive=list(config.sensitive), label_column=label_column, prediction_column=prediction_column,
                   min_group_size=config.min_group_size, intersections=config.intersections,
                   n_bootstrap=config.n_bootstrap, confidence=config.confidence, random_state=random_state,
                   version_column=version_column)

    def score(self, window: pd.DataFrame, *, version: int | None = None) -> FairnessReport:
        """Group metrics, gaps and intervals of the window's labelled predictions (of ``version`` only, when given)."""
        needed = [self.label_column, self.prediction_column, *self.sensitive]
        missing = [name for name in needed if name not in window.columns]
        if missing:
            return self._nothing(0, f"column(s) missing from the window: {', '.join(missing)}")
        if version is not None and self.version_column is not None and self.version_column in window.columns:
            window = window[(version_numbers(window[self.version_column]) == version).to_numpy()]
        window = window[window[self.label_column].notna() & window[self.prediction_column].notna()]
        if len(window) == 0:
            return self._nothing(0, "no labelled rows")
        label, prediction = _zero_one(window[self.label_column]), _zero_one(window[self.prediction_column])
        if label is None or prediction is None:
            return self._nothing(len(window), "labels and predictions must be 0 or 1 (a binary classifier)")
        outcome = 2 * label + prediction
        attributes = self._attributes(window)
        seeds = np.random.SeedSequence(self.random_state).spawn(len(attributes))
        reports = tuple(self._attribute(name, codes, groups, outcome, np.random.default_rng(seed))
                        for (name, codes, groups), seed in zip(attributes, seeds, strict=True))
        too_small = tuple((a.attribute, g.group, g.size) for a in reports for g in a.groups if g.too_small)
        return FairnessReport(n_rows=len(window), attributes=reports, too_small=too_small,
                              confidence=self.confidence)

    def _nothing(self, n_rows: int, reason: str) -> FairnessReport:
        return FairnessReport(n_rows=n_rows, confidence=self.confidence, reason=reason)

    def _attributes(self, window: pd.DataFrame) -> list[tuple[str, np.ndarray, np.ndarray]]:
        """(name, group code of each row, group names) of each sensitive column, then of their intersection."""
        columns = [(name, *_groups(window[name])) for name in self.sensitive]
        if self.intersections and len(columns) >= 2:
            codes, cells = pd.MultiIndex.from_arrays([codes for _, codes, _ in columns]).factorize(sort=True)
            names = np.array([" & ".join(str(groups[i]) for (_, _, groups), i in zip(columns, cell, strict=True))
                              for cell in cells], dtype=object)
            columns.append((" & ".join(self.sensitive), np.asarray(codes, dtype=np.intp), names))
        return columns

    def _attribute(self, name: str, codes: np.ndarray, groups: np.ndarray, outcome: np.ndarray,
                   rng: np.random.Generator) -> AttributeReport:
        k = len(groups)
        counts = np.bincount(codes * 4 + outcome, minlength=4 * k).reshape(k, 4)
        sizes = counts.sum(axis=1)
        is_large = sizes >= self.min_group_size
        large = np.flatnonzero(is_large)
        frame = _metric_frame(name, groups[large], counts[large]) if large.size else None
        rates = _group_rates(frame, groups[large], counts[large]) if frame is not None else {}
        metrics = tuple(GroupMetrics(group=str(groups[i]), size=int(sizes[i]), too_small=not is_large[i],
                                     **rates.get(str(groups[i]), {})) for i in range(k))
        if large.size < 2:
            return AttributeReport(name, metrics, reason=f"{large.size} group(s) with at least "
                                                         f"{self.min_group_size} rows; a gap needs two")
        values = _gap_values(groups[large], counts[large], frame)
        intervals: dict[str, tuple[float, float]] = {}
        if self.n_bootstrap > 0 and large.size <= MAX_GROUPS_WITH_INTERVALS:
            intervals = _intervals(counts[large], self.n_bootstrap, self.confidence, rng)
        gaps = {gap: Gap(value, *intervals.get(gap, (None, None))) for gap, value in values.items()}
        return AttributeReport(name, metrics, gaps)


def _groups(values: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """Group code of each row and the group names (the values as text, sorted; a missing value is ``MISSING``)."""
    codes, uniques = pd.factorize(values, use_na_sentinel=True)
    text = [str(value) for value in uniques]
    if (codes < 0).any():  # code -1, the last name
        text.append(MISSING)
    names, merged = np.unique(np.array(text, dtype=object), return_inverse=True)  # 1 and "1": one group, "1"
    return merged.ravel()[codes].astype(np.intp), names


def _zero_one(values: pd.Series) -> np.ndarray | None:
    """The values as 0/1 integers, or ``None`` when they are not all 0 or 1 (``True``/``False`` count)."""
    numbers = pd.to_numeric(values, errors="coerce").to_numpy(dtype=float)
    if np.isnan(numbers).any() or not np.isin(numbers, (0.0, 1.0)).all():
        return None
    return numbers.astype(np.intp)


def _table(groups: np.ndarray, counts: np.ndarray, keep: np.ndarray | None = None
           ) -> tuple[np.ndarray, np.ndarray, pd.Series, np.ndarray]:
    """The contingency table as fairlearn's rows: label, prediction, group and count (weight) of each pair seen."""
    if keep is not None:
        groups, counts = groups[keep], counts[keep]
    label = np.tile([0, 0, 1, 1], len(groups))
    prediction = np.tile([0, 1, 0, 1], len(groups))
    group = np.repeat(groups, 4)
    weight = counts.ravel().astype(float)
    seen = weight > 0
    return label[seen], prediction[seen], pd.Series(group[seen], name="group"), weight[seen]


def _metric_frame(name: str, groups: np.ndarray, counts: np.ndarray) -> flm.MetricFrame:
    label, prediction, group, weight = _table(groups, counts)
    metrics = {"selection_rate": flm.selection_rate, "true_positive_rate": flm.true_positive_rate,
               "false_positive_rate": flm.false_positive_rate, "accuracy": accuracy_score}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a rate without its denominator: unknown below, not a warning
        return flm.MetricFrame(metrics=metrics, y_true=label, y_pred=prediction, sensitive_features=group.rename(name),
                               sample_params={m: {"sample_weight": weight} for m in metrics})


def _group_rates(frame: flm.MetricFrame, groups: np.ndarray, counts: np.ndarray) -> dict[str, dict[str, float | None]]:
    """fairlearn's rates by group name; a rate without positives (negatives) to divide by is ``None``."""
    by_group = frame.by_group
    rates: dict[str, dict[str, float | None]] = {}
    for group, row in zip(groups, counts, strict=True):
        values = {metric: _known(by_group.loc[group, metric]) for metric in GROUP_METRICS}
        if row[_FN] + row[_TP] == 0:
            values["true_positive_rate"] = None
        if row[_TN] + row[_FP] == 0:
            values["false_positive_rate"] = None
        rates[str(group)] = values
    return rates


def _known(value: Any) -> float | None:
    value = float(value)
    return value if math.isfinite(value) else None


def _gap_values(groups: np.ndarray, counts: np.ndarray, frame: flm.MetricFrame) -> dict[str, float]:
    """fairlearn's gaps between the groups (each group large enough); a gap with fewer than two groups is left out."""
    positives = counts[:, _FN] + counts[:, _TP] > 0
    negatives = counts[:, _TN] + counts[:, _FP] > 0
    label, prediction, group, weight = _table(groups, counts)
    values: dict[str, float | None] = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        values["demographic_parity_difference"] = flm.demographic_parity_difference(
            label, prediction, sensitive_features=group, sample_weight=weight)
        values["demographic_parity_ratio"] = flm.demographic_parity_ratio(
            label, prediction, sensitive_features=group, sample_weight=weight)
        values["accuracy_difference"] = frame.difference(method="between_groups")["accuracy"]
        if positives.all() and negatives.all():
            values["equalized_odds_difference"] = flm.equalized_odds_difference(
                label, prediction, sensitive_features=group, sample_weight=weight)
            values["equal_opportunity_difference"] = flm.equal_opportunity_difference(
                label, prediction, sensitive_features=group, sample_weight=weight)
        else:  # the rates of the groups that have them
            tpr = fpr = None
            if positives.sum() >= 2:
                label, prediction, group, weight = _table(groups, counts, positives)
                tpr = values["equal_opportunity_difference"] = flm.equal_opportunity_difference(
                    label, prediction, sensitive_features=group, sample_weight=weight)
            if negatives.sum() >= 2:
                label, prediction, group, weight = _table(groups, counts, negatives)
                fpr = flm.false_positive_rate_difference(label, prediction, sensitive_features=group,
                                                         sample_weight=weight)
            known = [value for value in (tpr, fpr) if value is not None]
            values["equalized_odds_difference"] = max(known) if known else None
    known_values = {gap: _known(values[gap]) for gap in GAPS if values.get(gap) is not None}
    return {gap: value for gap, value in known_values.items() if value is not None}


def _rates(counts: np.ndarray) -> dict[str, np.ndarray]:
    """Selection, true and false positive rates and accuracy from (..., 4) outcome counts; NaN where undefined."""
    size = counts.sum(axis=-1)
    positives = counts[..., _FN] + counts[..., _TP]
    negatives = counts[..., _TN] + counts[..., _FP]
    with np.errstate(divide="ignore", invalid="ignore"):
        return {"selection_rate": (counts[..., _FP] + counts[..., _TP]) / size,
                "true_positive_rate": counts[..., _TP] / positives,
                "false_positive_rate": counts[..., _FP] / negatives,
                "accuracy": (counts[..., _TN] + counts[..., _TP]) / size}


def _pairs(values: np.ndarray, eligible: np.ndarray) -> np.ndarray:
    """Signed differences ``values[..., i] - values[..., j]`` over the pairs i < j of eligible groups."""
    index = np.flatnonzero(eligible)
    i, j = np.triu_indices(index.size, k=1)
    return values[..., index[i]] - values[..., index[j]]


def _intervals(counts: np.ndarray, n_bootstrap: int, confidence: float,
               rng: np.random.Generator) -> dict[str, tuple[float, float]]:
    """Bootstrap intervals of the gaps between groups with these (k, 4) outcome counts (see the module docstring)."""
    sizes = counts.sum(axis=1)
    draws = rng.multinomial(sizes, counts / sizes[:, None], size=(n_bootstrap, len(sizes)))
    point, boot = _rates(counts), _rates(draws)
    everyone = np.ones(len(sizes), dtype=bool)
    positives = counts[:, _FN] + counts[:, _TP] > 0
    negatives = counts[:, _TN] + counts[:, _FP] > 0
    with np.errstate(divide="ignore", invalid="ignore"):
        log_point, log_boot = np.log(point["selection_rate"]), np.log(boot["selection_rate"])
    contrasts = {
        "demographic_parity_difference": [("selection_rate", everyone)],
        "equalized_odds_difference": [("true_positive_rate", positives), ("false_positive_rate", negatives)],
        "equal_opportunity_difference": [("true_positive_rate", positives)],
        "accuracy_difference": [("accuracy", everyone)],
    }
    intervals: dict[str, tuple[float, float]] = {}
    for gap, parts in contrasts.items():
        parts = [(metric, eligible) for metric, eligible in parts if eligible.sum() >= 2]
        if parts:
            observed = np.concatenate([_pairs(point[metric], eligible) for metric, eligible in parts])
            resampled = np.concatenate([_pairs(boot[metric], eligible) for metric, eligible in parts], axis=1)
            intervals[gap] = _gap_interval(observed, resampled, confidence)
    # Two groups that select nobody are equal (log ratio 0), not undefined; one that selects nobody: ratio 0.
    observed = np.nan_to_num(_pairs(log_point, everyone), nan=0.0, posinf=np.inf, neginf=-np.inf)
    resampled = np.nan_to_num(_pairs(log_boot, everyone), nan=0.0, posinf=np.inf, neginf=-np.inf)
    low, high = _gap_interval(observed, resampled, confidence)
    intervals["demographic_parity_ratio"] = (math.exp(-high), math.exp(-low))
    return intervals


def _gap_interval(observed: np.ndarray, resampled: np.ndarray, confidence: float) -> tuple[float, float]:
    """Interval of ``max |d_j|`` from simultaneous percentile intervals of the signed differences ``d_j``.

    ``observed``: (J,) differences; ``resampled``: (B, J) bootstrap differences
    (NaN where a resample left a difference undefined: it is kept at its
    observed value).

    >>> rng = np.random.default_rng(0)
    >>> _gap_interval(np.array([0.01]), rng.normal(0.01, 0.02, size=(1000, 1)), 0.95)[0]
    0.0
    """
    resampled = np.where(np.isnan(resampled), observed, resampled)
    low, high = _simultaneous_percentiles(resampled, confidence)
    away_from_zero = np.where(low > 0, low, np.where(high < 0, -high, 0.0))
    return float(away_from_zero.max()), float(np.maximum(np.abs(low), np.abs(high)).max())


def _simultaneous_percentiles(draws: np.ndarray, confidence: float) -> tuple[np.ndarray, np.ndarray]:
    """Percentile intervals of each column of ``draws`` (B, J) that together hold a ``confidence`` share of rows.

    Mandel and Betensky (2008): the interval of column j between its k-th
    smallest and k-th largest draw; k is the largest for which at least
    ``ceil(confidence * B)`` rows lie inside all J intervals. With one column,
    the ordinary percentile interval.

    >>> draws = np.arange(1.0, 201.0)[:, None]
    >>> _simultaneous_percentiles(draws, 0.95)
    (array([6.]), array([195.]))
    """
    n = draws.shape[0]
    ordered = np.sort(draws, axis=0)
    depth = np.empty(draws.shape, dtype=np.intp)  # the largest k whose interval holds the draw
    for j in range(draws.shape[1]):
        at_most = np.searchsorted(ordered[:, j], draws[:, j], side="right")
        below = np.searchsorted(ordered[:, j], draws[:, j], side="left")
        depth[:, j] = np.minimum(at_most, n - below)
    row_depth = np.sort(depth.min(axis=1))[::-1]
    k = int(row_depth[math.ceil(confidence * n - 1e-9) - 1])
    return ordered[k - 1], ordered[n - k]


def fairness_observations(model_id: int, at: datetime, report: FairnessReport) -> list[Observation]:
    """The observations of one fairness report: summary, per attribute gap and per group rows (see the module).

    >>> from datetime import timezone
    >>> window = pd.DataFrame({"sex": ["F"] * 60 + ["M"] * 60 + ["X"] * 5, "label": [0, 1] * 60 + [1] * 5,
    ...                        "prediction": [0, 1] * 30 + [1, 1] * 30 + [1] * 5})
    >>> sensor = FairnessSensor(sensitive=["sex"], label_column="label", prediction_column="prediction")
    >>> rows = fairness_observations(1, datetime(2026, 1, 5, tzinfo=timezone.utc), sensor.score(window))
    >>> summary = {r.metric: r.value for r in rows if not r.labels}
    >>> summary["fairness.demographic_parity_difference"], summary["fairness.smallest_group"]
    (0.5, 60.0)
    >>> [r.metric.removeprefix("fairness.gap.") for r in rows if r.labels == {"attribute": "sex"}][:3]
    ['demographic_parity_difference', 'demographic_parity_difference.ci_low', 'demographic_parity_difference.ci_high']
    >>> [(r.metric, r.labels["group"], r.value) for r in rows if r.labels.get("group") == "X"]
    [('fairness.group.size', 'X', 5.0)]
    """
    if report.reason is not None:
        return []

    def row(metric: str, value: float, **labels: str) -> Observation:
        return Observation(time=at, model_id=model_id, sensor="fairness", metric=metric, value=float(value),
                           labels=labels)

    rows = [row(f"fairness.{name}", value) for name, value in report.summary().items()]
    for attribute in report.attributes:
        for name, gap in attribute.gaps.items():
            rows.append(row(f"fairness.gap.{name}", gap.value, attribute=attribute.attribute))
            for end in ("ci_low", "ci_high"):
                value = getattr(gap, end)
                if value is not None:
                    rows.append(row(f"fairness.gap.{name}.{end}", value, attribute=attribute.attribute))
        for group in attribute.groups:
            rows.append(row("fairness.group.size", group.size, attribute=attribute.attribute, group=group.group))
            for metric in GROUP_METRICS:
                value = getattr(group, metric)
                if value is not None:
                    rows.append(row(f"fairness.group.{metric}", value, attribute=attribute.attribute,
                                    group=group.group))
    return rows
