"""Data quality of a model's inference log, checked before any drift statistic.

Who calls it: the Monitor stage fits one :class:`DataQualitySensor` per
production version of a model on the same reference as the drift sensor (that
version's training window of the inference log) and scores the drift sensor's
current window every tick, before drift. The report becomes the ``quality.*``
observations; the Analyze stage turns them into the ``schema_change``,
``null_spike``, ``out_of_range`` and ``unseen_categories`` symptoms, so a
broken upstream pipeline is reported as that and not as data drift.

What is checked:

- **Schema**, over every column of the window: a column of the reference is
  *missing* when the current window lacks it, *new* when the reference lacks
  it, *retyped* when its kind changed. A column counts as present only when it
  holds a value, because a Parquet directory reads a column dropped from its
  newer files as nulls; a column with no value in the current window is missing
  only when the reference's null rate makes that improbable (the chance of
  ``n`` nulls in a row, ``rate ** n``, is below ``alpha``).
- **Per feature** (the configured numeric and categorical columns): the null
  rate against the reference's, the share of numeric values outside the
  reference's range (its ``range_quantiles``) against the reference's own
  share, and the share of categorical values the reference never had.

The kind of a column is decided from the data, not from the configuration:
``bool`` (a boolean dtype, or objects that are all booleans), ``datetime``
(a datetime dtype, or date and datetime objects), ``numeric`` (a numeric
dtype, or numbers and decimals held as objects) and ``categorical`` (anything
else: strings, mixed objects, a pandas categorical). Integers that turn into
floats (a null arriving in an integer column) stay numeric; numbers arriving as
text are retyped.

A rate increase counts as a spike when it exceeds its threshold *and* a
one-sided pooled two-proportion z-test rejects "no increase" at ``alpha``:
the threshold keeps negligible changes quiet on large windows, the test keeps
noise quiet on small ones.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, ClassVar, Literal, Self

import numpy as np
import pandas as pd

from knowledge.tables import Observation, new_observation, observation_row
from mape.config import FeaturesConfig, QualityConfig
from mape.errors import InvalidParameterError, NotFittedError
from mape.monitor.detectors._params import Constraint, Interval, validate_params

__all__ = ["ColumnQuality", "DataQualitySensor", "QualityReport", "column_kind", "increase_p_value",
           "quality_observations", "quality_rows"]

Kind = Literal["numeric", "categorical", "datetime", "bool"]
SchemaChange = Literal["missing", "new", "retyped"]

#: How many unseen categories a column's report names (the share counts them all).
MAX_UNSEEN_SHOWN = 10

_NUMERIC_OBJECTS = frozenset({"integer", "floating", "mixed-integer-float", "decimal"})
_DATETIME_OBJECTS = frozenset({"datetime", "datetime64", "date"})


def column_kind(values: pd.Series, present: int | None = None) -> Kind | None:
    """The kind of a column: ``numeric``, ``categorical``, ``datetime`` or ``bool``; ``None`` without a value.

    ``present``, the number of non-null values, when the caller has counted them.

    >>> column_kind(pd.Series([1, 2, None])), column_kind(pd.Series(["1.5", "2"])), column_kind(pd.Series([None]))
    ('numeric', 'categorical', None)
    >>> column_kind(pd.Series([True, None], dtype=object)), column_kind(pd.Series(pd.to_datetime(["2026-01-05"])))
    ('bool', 'datetime')
    """
    if not (values.notna().any() if present is None else present):
        return None
    dtype = values.dtype
    if pd.api.types.is_bool_dtype(dtype):
        return "bool"
    if pd.api.types.is_datetime64_any_dtype(dtype):
        return "datetime"
    if isinstance(dtype, pd.CategoricalDtype):
        return "categorical"
    if pd.api.types.is_numeric_dtype(dtype):
        return "numeric"
    inferred = pd.api.types.infer_dtype(values, skipna=True)
    if inferred in _NUMERIC_OBJECTS:
        return "numeric"
    if inferred == "boolean":
        return "bool"
    if inferred in _DATETIME_OBJECTS:
        return "datetime"
    return "categorical"


def increase_p_value(x_current: int, n_current: int, x_reference: int, n_reference: int) -> float:
    """One-sided p-value of the pooled two-proportion z-test that the current proportion is the larger.

    >>> round(increase_p_value(25, 5000, 15, 5000), 3)  # 0.5 % against 0.3 %: noise
    0.057
    >>> increase_p_value(75, 5000, 15, 5000) < 1e-9   # 1.5 % against 0.3 %
    True
    """
    if n_current == 0 or n_reference == 0:
        return math.nan
    pooled = (x_current + x_reference) / (n_current + n_reference)
    difference = x_current / n_current - x_reference / n_reference
    if pooled in (0.0, 1.0):  # every value the same in both samples: no evidence of anything
        return 1.0
    z = difference / math.sqrt(pooled * (1 - pooled) * (1 / n_current + 1 / n_reference))
    return 0.5 * math.erfc(z / math.sqrt(2))


@dataclass(frozen=True)
class ColumnQuality:
    """The findings on one column; a field that does not apply to the column is ``None``.

    Attributes
    ----------
    column : str
    reference_kind, current_kind : str or None
        The kind in each window (``None``: absent, or no value).
    schema_change : {"missing", "new", "retyped"} or None
        A column with a schema change has no other statistic.
    null_rate, reference_null_rate : float or None
        Share of nulls in each window (features only).
    null_p_value : float or None
        One-sided z-test of the increase.
    null_spike : bool
        The increase exceeds ``null_rate_increase`` and the test rejects at ``alpha``.
    out_of_range_share, reference_out_of_range_share : float or None
        Share of non-null values outside the reference's range, in each window (numeric features).
    out_of_range_p_value : float or None
    out_of_range_spike : bool
        The share exceeds the reference's by ``out_of_range_increase`` and the test rejects at ``alpha``.
    unseen_category_share : float or None
        Share of non-null values the reference never had (categorical features).
    unseen_categories : tuple of str
        Some of those values (at most :data:`MAX_UNSEEN_SHOWN`, most frequent first), as text.
    unseen_flagged : bool
        The share is above ``unseen_category_share``.
    """

    column: str
    reference_kind: Kind | None
    current_kind: Kind | None
    schema_change: SchemaChange | None = None
    null_rate: float | None = None
    reference_null_rate: float | None = None
    null_p_value: float | None = None
    null_spike: bool = False
    out_of_range_share: float | None = None
    reference_out_of_range_share: float | None = None
    out_of_range_p_value: float | None = None
    out_of_range_spike: bool = False
    unseen_category_share: float | None = None
    unseen_categories: tuple[str, ...] = ()
    unseen_flagged: bool = False

    @property
    def null_rate_increase(self) -> float | None:
        if self.null_rate is None or self.reference_null_rate is None:
            return None
        return self.null_rate - self.reference_null_rate

    @property
    def issues(self) -> tuple[str, ...]:
        """The problems found: a schema change, else ``null_spike``, ``out_of_range``, ``unseen_categories``."""
        found = [self.schema_change] if self.schema_change else []
        found += [name for name, flagged in (("null_spike", self.null_spike), ("out_of_range", self.out_of_range_spike),
                                             ("unseen_categories", self.unseen_flagged)) if flagged]
        return tuple(found)


@dataclass(frozen=True)
class QualityReport:
    """Data quality of one current window against the reference, per column and in summary.

    With fewer than ``min_samples`` rows in either window there is no verdict:
    ``reason`` says why, ``columns`` is empty and every summary value but
    ``n_current`` is ``None``.

    Attributes
    ----------
    n_reference, n_current : int
        Rows in each window.
    columns : tuple of ColumnQuality
        Every feature (configuration order), then every other column with a schema change.
    missing_columns, new_columns, retyped_columns : tuple of str
        The schema changes.
    reason : str or None
        Why there is no verdict.
    """

    n_reference: int
    n_current: int
    columns: tuple[ColumnQuality, ...] = ()
    missing_columns: tuple[str, ...] = ()
    new_columns: tuple[str, ...] = ()
    retyped_columns: tuple[str, ...] = ()
    reason: str | None = None

    @property
    def insufficient_data(self) -> bool:
        return self.reason is not None

    @property
    def issues(self) -> tuple[ColumnQuality, ...]:
        """The columns with any problem."""
        return tuple(c for c in self.columns if c.issues)

    def summary(self) -> dict[str, float | int | None]:
        """The ``quality.<name>`` summary values; without a verdict all but ``n_current`` are ``None``."""
        names = ("schema_changes", "missing_columns", "new_columns", "retyped_columns", "null_spikes",
                 "out_of_range_spikes", "unseen_category_columns", "max_null_rate_increase", "max_out_of_range_share",
                 "max_unseen_category_share", "issues")
        if self.insufficient_data:
            return {**dict.fromkeys(names), "n_current": self.n_current}
        columns = self.columns

        def largest(values: Iterable[float | None]) -> float | None:
            present = [v for v in values if v is not None and not math.isnan(v)]
            return max(present) if present else None

        return {
            "schema_changes": len(self.missing_columns) + len(self.new_columns) + len(self.retyped_columns),
            "missing_columns": len(self.missing_columns),
            "new_columns": len(self.new_columns),
            "retyped_columns": len(self.retyped_columns),
            "null_spikes": sum(c.null_spike for c in columns),
            "out_of_range_spikes": sum(c.out_of_range_spike for c in columns),
            "unseen_category_columns": sum(c.unseen_flagged for c in columns),
            "max_null_rate_increase": largest(c.null_rate_increase for c in columns),
            "max_out_of_range_share": largest(c.out_of_range_share for c in columns),
            "max_unseen_category_share": largest(c.unseen_category_share for c in columns),
            "issues": len(self.issues),
            "n_current": self.n_current,
        }

    def __str__(self) -> str:
        if self.reason is not None:
            return f"no quality verdict ({self.reason})"
        found = self.issues
        if not found:
            return f"no data quality issue in {len(self.columns)} columns"
        return f"{len(found)} column{'s' if len(found) > 1 else ''} with issues: " + "; ".join(
            f"{c.column} ({', '.join(c.issues)})" for c in found)


class DataQualitySensor:
    """Checks a window of the inference log for broken data: schema changes, null and range spikes, new categories.

    Parameters
    ----------
    features : FeaturesConfig
        The numeric features (null rate and range) and categorical features
        (null rate and categories); the schema check covers every column.
    null_rate_increase : float, default 0.05
        A feature's null rate must rise by more than this (and significantly) to spike.
    out_of_range_increase : float, default 0.01
        The share of a numeric feature's values outside the reference range
        must exceed the reference's own share by more than this (and significantly).
    unseen_category_share : float, default 0.01
        Share of a categorical feature's values the reference never had above
        which the column is flagged.
    range_quantiles : (float, float), default (0.001, 0.999)
        The reference range of a numeric feature: these quantiles of its values.
    min_samples : int, default 100
        Fewer rows than this in either window: no verdict.
    alpha : float, default 0.01
        Level of the z-tests, and of the "no value at all" test that tells a
        missing column from a sparse one.

    Attributes
    ----------
    n_reference_ : int
        Rows in the reference window.
    kinds_ : dict of str to str
        The kind of every reference column that holds a value.
    null_rates_ : dict of str to float
        The null rate of every reference column.
    ranges_ : dict of str to (float, float)
        The range of every numeric feature.
    out_of_range_shares_ : dict of str to float
        The reference's own share outside that range.
    categories_ : dict of str to frozenset
        The categories of every categorical feature.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> reference = pd.DataFrame({"age": rng.normal(40, 10, 2000).round(), "plan": rng.choice(["basic", "pro"], 2000)})
    >>> sensor = DataQualitySensor(FeaturesConfig(numeric=["age"], categorical=["plan"])).fit(reference)
    >>> print(sensor.score(reference.iloc[:500]))
    no data quality issue in 2 columns
    >>> current = pd.DataFrame({"age": reference["age"].iloc[:500].astype(str),
    ...                         "plan": ["gold"] * 40 + ["basic"] * 460, "channel": "web"})
    >>> report = sensor.score(current)
    >>> print(report)
    3 columns with issues: age (retyped); plan (unseen_categories); channel (new)
    >>> report.summary()["schema_changes"], report.summary()["max_unseen_category_share"]
    (2, 0.08)

    References
    ----------
    Breck, E., Polyzotis, N., Roy, S., Whang, S. E., & Zinkevich, M. (2019).
    Data validation for machine learning. *Proceedings of Machine Learning and
    Systems (MLSys)*, 1, 334-347.

    Fleiss, J. L., Levin, B., & Paik, M. C. (2003). *Statistical Methods for
    Rates and Proportions* (3rd ed.). Wiley. (The pooled two-proportion z-test.)
    """

    _parameter_constraints: ClassVar[dict[str, Constraint]] = {
        "null_rate_increase": Interval(float, 0, 1, closed="left"),
        "out_of_range_increase": Interval(float, 0, 1, closed="left"),
        "unseen_category_share": Interval(float, 0, 1, closed="left"),
        "min_samples": Interval(int, 1, None, closed="left"),
        "alpha": Interval(float, 0, 1, closed="neither"),
    }

    def __init__(self, features: FeaturesConfig, *, null_rate_increase: float = 0.05,
                 out_of_range_increase: float = 0.01, unseen_category_share: float = 0.01,
                 range_quantiles: tuple[float, float] = (0.001, 0.999), min_samples: int = 100,
                 alpha: float = 0.01) -> None:
        self.features = features
        self.null_rate_increase = null_rate_increase
        self.out_of_range_increase = out_of_range_increase
        self.unseen_category_share = unseen_category_share
        self.range_quantiles = range_quantiles
        self.min_samples = min_samples
        self.alpha = alpha
        validate_params(type(self).__name__, self._parameter_constraints, {
            "null_rate_increase": null_rate_increase, "out_of_range_increase": out_of_range_increase,
            "unseen_category_share": unseen_category_share, "min_samples": min_samples, "alpha": alpha})
        if not _quantile_pair(range_quantiles):
            raise InvalidParameterError.for_parameter(
                "range_quantiles", type(self).__name__, "a pair of floats (low, high) with 0 <= low < high <= 1",
                range_quantiles)

    @classmethod
    def from_config(cls, features: FeaturesConfig, quality: QualityConfig) -> Self:
        """The sensor a model's ``features`` and ``quality`` settings describe."""
        return cls(features, null_rate_increase=quality.null_rate_increase,
                   out_of_range_increase=quality.out_of_range_increase,
                   unseen_category_share=quality.unseen_category_share,
                   range_quantiles=quality.range_quantiles, min_samples=quality.min_samples, alpha=quality.alpha)

    def __repr__(self) -> str:
        return (f"DataQualitySensor(numeric={self.features.numeric!r}, categorical={self.features.categorical!r}, "
                f"null_rate_increase={self.null_rate_increase!r}, "
                f"out_of_range_increase={self.out_of_range_increase!r}, "
                f"unseen_category_share={self.unseen_category_share!r}, range_quantiles={self.range_quantiles!r}, "
                f"min_samples={self.min_samples!r}, alpha={self.alpha!r})")

    def fit(self, reference: pd.DataFrame) -> Self:
        """Learn the reference's schema, null rates, ranges and categories; returns ``self``."""
        self.n_reference_ = len(reference)
        self.kinds_: dict[str, Kind] = {}
        self.null_rates_: dict[str, float] = {}
        self.non_null_: dict[str, int] = {}
        self.ranges_: dict[str, tuple[float, float]] = {}
        self.out_of_range_shares_: dict[str, float] = {}
        self.categories_: dict[str, frozenset[Any]] = {}
        counts = reference.notna().sum()
        for column, values in reference.items():
            present = int(counts[column])
            kind = column_kind(values, present)
            self.null_rates_[column] = 1 - present / len(values) if len(values) else 0.0
            self.non_null_[column] = present
            if kind is None:
                continue
            self.kinds_[column] = kind
            if column in self.features.numeric and kind == "numeric":
                numbers = _numbers(values)
                numbers = numbers[~np.isnan(numbers)]
                low, high = (float(q) for q in np.quantile(numbers, self.range_quantiles))
                self.ranges_[column] = (low, high)
                self.out_of_range_shares_[column] = float(np.mean((numbers < low) | (numbers > high)))
            elif column in self.features.categorical:
                self.categories_[column] = frozenset(values.dropna().unique().tolist())
        return self

    def score(self, current: pd.DataFrame) -> QualityReport:
        """Check the current window against the reference.

        Raises
        ------
        NotFittedError
            Before :meth:`fit`.
        """
        if not hasattr(self, "n_reference_"):
            raise NotFittedError(
                "This DataQualitySensor instance is not fitted yet; call 'fit' with a reference window first.")
        n = len(current)
        if min(self.n_reference_, n) < self.min_samples:
            return QualityReport(self.n_reference_, n, reason=(
                f"insufficient data: {self.n_reference_} reference and {n} current rows, "
                f"at least {self.min_samples} needed in each"))
        counts = current.notna().sum()
        kinds = {column: column_kind(values, int(counts[column])) for column, values in current.items()}
        changes: dict[str, SchemaChange] = {}
        for column, kind in self.kinds_.items():
            now = kinds.get(column)
            if now is None and (column not in kinds or self.null_rates_[column] ** n < self.alpha):
                changes[column] = "missing"
            elif now is not None and now != kind:
                changes[column] = "retyped"
        for column, kind in kinds.items():
            if kind is not None and column not in self.kinds_:
                changes[column] = "new"
        columns = []
        for column in dict.fromkeys([*self.features.all, *changes]):
            change = changes.get(column)
            if change is not None or column not in self.kinds_ or column not in kinds:
                columns.append(ColumnQuality(column, self.kinds_.get(column), kinds.get(column), schema_change=change))
            else:
                columns.append(self._column(column, current[column], kinds[column], int(counts[column])))
        return QualityReport(
            self.n_reference_, n, columns=tuple(columns),
            missing_columns=tuple(c for c, change in changes.items() if change == "missing"),
            new_columns=tuple(c for c, change in changes.items() if change == "new"),
            retyped_columns=tuple(c for c, change in changes.items() if change == "retyped"),
        )

    def _column(self, column: str, values: pd.Series, kind: Kind | None, present: int) -> ColumnQuality:
        """The statistics of one feature present in both windows with the same kind (``present`` non-null values)."""
        n = len(values)
        null_rate = 1 - present / n
        reference_nulls = round(self.null_rates_[column] * self.n_reference_)
        null_p = increase_p_value(n - present, n, reference_nulls, self.n_reference_)
        found: dict[str, Any] = {
            "null_rate": null_rate, "reference_null_rate": self.null_rates_[column], "null_p_value": null_p,
            "null_spike": bool(null_rate - self.null_rates_[column] > self.null_rate_increase and null_p < self.alpha),
        }
        reference_present = self.non_null_[column]
        if column in self.ranges_ and present:
            low, high = self.ranges_[column]
            numbers = _numbers(values)  # nulls are NaN here, and NaN is never outside
            outside = int(np.count_nonzero((numbers < low) | (numbers > high)))
            share, reference_share = outside / present, self.out_of_range_shares_[column]
            p = increase_p_value(outside, present, round(reference_share * reference_present), reference_present)
            spike = share - reference_share > self.out_of_range_increase and p < self.alpha
            found.update(out_of_range_share=share, reference_out_of_range_share=reference_share,
                         out_of_range_p_value=p, out_of_range_spike=bool(spike))
        if column in self.categories_ and present:
            known = self.categories_[column]
            observed = values.dropna()
            unseen = observed[~observed.isin(list(known))]
            share = len(unseen) / present
            shown = tuple(str(v) for v in unseen.value_counts().index[:MAX_UNSEEN_SHOWN])
            found.update(unseen_category_share=share, unseen_categories=shown,
                         unseen_flagged=bool(share > self.unseen_category_share))
        return ColumnQuality(column, self.kinds_[column], kind, **found)


def _quantile_pair(value: Any) -> bool:
    if not isinstance(value, (tuple, list)) or len(value) != 2:
        return False
    low, high = value
    number = Interval(float, 0, 1, closed="both")
    return number.is_satisfied_by(low) and number.is_satisfied_by(high) and low < high


def _numbers(values: pd.Series) -> np.ndarray:
    """A numeric column as floats, nulls as NaN (decimals and numbers held as objects too)."""
    if pd.api.types.is_numeric_dtype(values.dtype) and not pd.api.types.is_bool_dtype(values.dtype):
        return values.to_numpy(dtype=float, na_value=np.nan)
    return pd.to_numeric(values, errors="coerce").to_numpy(dtype=float, na_value=np.nan)


# ---------------------------------------------------------------------- observation rows

#: The ``quality.column.<name>`` rows of one column and the field each reads; only values that apply are written.
_COLUMN_METRICS = (
    ("null_rate", "null_rate"), ("null_rate_increase", "null_rate_increase"), ("null_spike", "null_spike"),
    ("out_of_range_share", "out_of_range_share"), ("out_of_range_spike", "out_of_range_spike"),
    ("unseen_category_share", "unseen_category_share"), ("unseen_categories", "unseen_flagged"),
)


def quality_observations(model_id: int, at: datetime, report: QualityReport) -> list[Observation]:
    """The ``quality.*`` rows of one report: the summary (labels ``{}``) and per column ``quality.column.*``.

    Per column (labels ``{"column": name}``): ``quality.column.missing``,
    ``quality.column.new`` or ``quality.column.retyped`` (1.0) for a schema
    change; else, for a feature, ``null_rate``, ``null_rate_increase``,
    ``null_spike`` (1.0/0.0), for a numeric one ``out_of_range_share`` and
    ``out_of_range_spike``, for a categorical one ``unseen_category_share``
    and ``unseen_categories`` (1.0 when flagged). Without a verdict: the
    summary only, every value but ``quality.n_current`` ``None``.

    >>> from datetime import timezone
    >>> frame = pd.DataFrame({"x": np.arange(200.0)})
    >>> sensor = DataQualitySensor(FeaturesConfig(numeric=["x"])).fit(frame)
    >>> rows = quality_observations(1, datetime(2026, 1, 5, tzinfo=timezone.utc), sensor.score(frame[[]].assign(y=1)))
    >>> [(r.metric, r.labels, r.value) for r in rows if r.labels]
    [('quality.column.missing', {'column': 'x'}, 1.0), ('quality.column.new', {'column': 'y'}, 1.0)]
    >>> {r.metric: r.value for r in rows if not r.labels}["quality.schema_changes"]
    2.0
    """
    return [new_observation(**row) for row in quality_rows(model_id, at, report)]


def quality_rows(model_id: int, at: datetime, report: QualityReport) -> list[dict[str, Any]]:
    """The rows of :func:`quality_observations` as column values (:func:`knowledge.tables.observation_row`)."""
    def row(metric: str, value: float | int | bool | None, labels: dict[str, str]) -> dict[str, Any]:
        number = None if value is None else float(value)
        if number is not None and math.isnan(number):
            number = None
        return observation_row(time=at, model_id=model_id, sensor="quality", metric=metric, value=number,
                               labels=labels)

    rows = [row(f"quality.{name}", value, {}) for name, value in report.summary().items()]
    for column in report.columns:
        labels = {"column": column.column}
        if column.schema_change is not None:
            rows.append(row(f"quality.column.{column.schema_change}", 1.0, labels))
            continue
        for metric, attribute in _COLUMN_METRICS:
            value = getattr(column, attribute)
            if value is None or (attribute.endswith(("spike", "flagged")) and _statistic_of(attribute, column) is None):
                continue
            rows.append(row(f"quality.column.{metric}", value, dict(labels)))
    return rows


def _statistic_of(flag: str, column: ColumnQuality) -> float | None:
    """The statistic a flag is about: a flag is written only when its statistic was computed."""
    return {"null_spike": column.null_rate, "out_of_range_spike": column.out_of_range_share,
            "unseen_flagged": column.unseen_category_share}[flag]

