"""DataQualitySensor: each finding on hand-built frames, and quiet on clean data and on noise."""

from __future__ import annotations

from datetime import datetime, timezone
from decimal import Decimal

import numpy as np
import pandas as pd
import pytest

from mape.config import FeaturesConfig, QualityConfig
from mape.errors import InvalidParameterError, NotFittedError
from mape.monitor.sensors.quality import DataQualitySensor, column_kind, quality_observations

FEATURES = FeaturesConfig(numeric=["age", "income"], categorical=["plan"])
AT = datetime(2026, 1, 5, tzinfo=timezone.utc)


def frame(n: int, seed: int, *, null_rate: float = 0.0) -> pd.DataFrame:
    """Clean data: two numeric features, one categorical, an id and a timestamp (not features)."""
    rng = np.random.default_rng(seed)
    age = rng.normal(40, 10, n)
    if null_rate:
        age[rng.uniform(size=n) < null_rate] = np.nan
    return pd.DataFrame({
        "timestamp": pd.date_range("2026-01-05", periods=n, freq="s", tz="UTC"),
        "id": np.arange(n),
        "age": age,
        "income": rng.lognormal(4, 0.3, n),
        "plan": rng.choice(["basic", "pro", "team"], n, p=[0.6, 0.3, 0.1]),
    })


@pytest.fixture
def sensor() -> DataQualitySensor:
    return DataQualitySensor(FEATURES).fit(frame(5000, seed=0))


def test_missing_new_and_retyped_columns_are_schema_changes(sensor):
    current = frame(1000, seed=1).drop(columns="income").assign(age=lambda f: f["age"].round(1).astype(str),
                                                                 channel="web")

    report = sensor.score(current)

    assert (report.missing_columns, report.new_columns, report.retyped_columns) == (("income",), ("channel",),
                                                                                    ("age",))
    by_column = {c.column: c for c in report.columns}
    assert [c.column for c in report.columns] == ["age", "income", "plan", "channel"]
    assert (by_column["age"].reference_kind, by_column["age"].current_kind) == ("numeric", "categorical")
    assert by_column["income"].issues == ("missing",) and by_column["channel"].issues == ("new",)
    assert by_column["age"].out_of_range_share is None  # a retyped column is reported as that, nothing else
    summary = report.summary()
    assert summary["schema_changes"] == 3 and summary["issues"] == 3
    assert (summary["missing_columns"], summary["new_columns"], summary["retyped_columns"]) == (1, 1, 1)
    assert summary["null_spikes"] == summary["out_of_range_spikes"] == summary["unseen_category_columns"] == 0


def test_a_column_that_holds_no_value_is_missing_unless_the_reference_was_that_sparse():
    reference = frame(5000, seed=0).assign(note=lambda f: np.where(np.arange(len(f)) % 200 == 0, "x", None))
    sensor = DataQualitySensor(FEATURES).fit(reference)
    current = frame(300, seed=1).assign(income=np.nan, note=None)  # a Parquet directory reads a dropped column so

    report = sensor.score(current)

    assert report.missing_columns == ("income",)  # always filled before: 300 nulls in a row are no accident
    assert "note" not in report.missing_columns  # filled once in 200 rows: 300 nulls happen (22 % of the time)


def test_kinds_come_from_the_data():
    assert column_kind(pd.Series([1, 2, 3])) == column_kind(pd.Series([1.5, None])) == "numeric"
    assert column_kind(pd.Series([Decimal("1.5"), None], dtype=object)) == "numeric"  # SQL numeric columns
    assert column_kind(pd.Series(["1.5", "2"])) == column_kind(pd.Series(["a", 1], dtype=object)) == "categorical"
    assert column_kind(pd.Series(["a", "b"], dtype="category")) == "categorical"
    assert column_kind(pd.Series([True, False])) == column_kind(pd.Series([True, None], dtype=object)) == "bool"
    assert column_kind(pd.Series(pd.to_datetime(["2026-01-05"], utc=True))) == "datetime"
    assert column_kind(pd.Series([None, None], dtype=object)) is column_kind(pd.Series([np.nan])) is None


def test_an_integer_column_turning_float_is_not_retyped():
    reference = pd.DataFrame({"n": np.arange(500)})
    current = pd.DataFrame({"n": np.where(np.arange(500) % 50 == 0, np.nan, np.arange(500.0))})
    report = DataQualitySensor(FeaturesConfig(numeric=["n"])).fit(reference).score(current)
    assert report.retyped_columns == () and report.summary()["schema_changes"] == 0


def test_a_null_spike_needs_the_increase_and_a_significant_test(sensor):
    report = sensor.score(frame(1000, seed=1, null_rate=0.2))

    [age] = [c for c in report.columns if c.column == "age"]
    assert age.null_spike and age.issues == ("null_spike",)
    assert age.null_rate == pytest.approx(0.2, abs=0.03) and age.reference_null_rate == 0.0
    assert age.null_p_value < 1e-12
    assert report.summary()["null_spikes"] == 1
    assert report.summary()["max_null_rate_increase"] == pytest.approx(age.null_rate)


def test_the_z_test_keeps_a_noisy_small_increase_quiet():
    """0.5 % nulls on 5,000 rows against a 0.3 % reference: past a tiny threshold, but noise."""
    reference = pd.DataFrame({"x": np.where(np.arange(5000) < 15, np.nan, 1.0)})  # 0.3 %
    noisy = pd.DataFrame({"x": np.where(np.arange(5000) < 25, np.nan, 1.0)})  # 0.5 %
    broken = pd.DataFrame({"x": np.where(np.arange(5000) < 75, np.nan, 1.0)})  # 1.5 %
    sensor = DataQualitySensor(FeaturesConfig(numeric=["x"]), null_rate_increase=0.001).fit(reference)

    [quiet] = sensor.score(noisy).columns
    [loud] = sensor.score(broken).columns

    assert quiet.null_rate_increase == pytest.approx(0.002) and quiet.null_rate_increase > sensor.null_rate_increase
    assert quiet.null_p_value == pytest.approx(0.056, abs=0.001) and not quiet.null_spike
    assert loud.null_spike


def test_out_of_range_values_spike_against_the_reference_own_share(sensor):
    current = frame(2000, seed=1)
    current.loc[:99, "income"] = -999.0  # a sentinel for "unknown": 5 % of the rows

    report = sensor.score(current)

    [income] = [c for c in report.columns if c.column == "income"]
    assert income.out_of_range_spike and income.issues == ("out_of_range",)
    assert income.out_of_range_share == pytest.approx(0.05, abs=0.005)
    assert income.reference_out_of_range_share == pytest.approx(0.002, abs=0.0005)  # 0.1 % below, 0.1 % above
    low, high = sensor.ranges_["income"]
    assert low == pytest.approx(np.quantile(frame(5000, seed=0)["income"], 0.001))
    assert report.summary()["out_of_range_spikes"] == 1
    assert report.summary()["max_out_of_range_share"] == pytest.approx(income.out_of_range_share)


def test_unseen_categories_are_flagged_above_their_share(sensor):
    current = frame(2000, seed=1)
    current.loc[:59, "plan"] = "enterprise"  # 3 %
    few = frame(2000, seed=2)
    few.loc[:9, "plan"] = "enterprise"  # 0.5 %

    [plan] = [c for c in sensor.score(current).columns if c.column == "plan"]
    [rare] = [c for c in sensor.score(few).columns if c.column == "plan"]

    assert plan.unseen_flagged and plan.unseen_categories == ("enterprise",)
    assert plan.unseen_category_share == pytest.approx(0.03)
    assert not rare.unseen_flagged and rare.unseen_category_share == pytest.approx(0.005)


@pytest.mark.parametrize("seed", range(20))
def test_clean_data_has_no_finding(seed):
    """Two independent 5,000-row samples of one distribution, with 2 % nulls in both: nothing to report."""
    sensor = DataQualitySensor(FEATURES).fit(frame(5000, seed=1000 + seed, null_rate=0.02))

    report = sensor.score(frame(5000, seed=2000 + seed, null_rate=0.02))

    assert report.issues == () and report.summary()["issues"] == 0
    assert str(report) == "no data quality issue in 3 columns"


def test_fewer_rows_than_min_samples_give_no_verdict(sensor):
    report = sensor.score(frame(99, seed=1).drop(columns="age"))

    assert report.insufficient_data and report.reason.startswith("insufficient data: 5000 reference and 99 current")
    assert report.columns == () and report.missing_columns == ()
    summary = report.summary()
    assert summary["n_current"] == 99 and all(v is None for k, v in summary.items() if k != "n_current")
    rows = quality_observations(3, AT, report)
    assert [(r.metric, r.value) for r in rows if r.value is not None] == [("quality.n_current", 99.0)]
    assert all(r.labels == {} for r in rows) and len(rows) == 12


def test_observations_are_the_summary_and_per_column_rows(sensor):
    current = frame(1000, seed=1).drop(columns="income").assign(channel="web")
    rows = quality_observations(3, AT, sensor.score(current))

    summary = {r.metric: r.value for r in rows if not r.labels}
    assert list(summary) == [f"quality.{m}" for m in (
        "schema_changes", "missing_columns", "new_columns", "retyped_columns", "null_spikes", "out_of_range_spikes",
        "unseen_category_columns", "max_null_rate_increase", "max_out_of_range_share", "max_unseen_category_share",
        "issues", "n_current")]
    assert (summary["quality.schema_changes"], summary["quality.issues"], summary["quality.n_current"]) == (
        2.0, 2.0, 1000.0)
    per_column = {(r.labels["column"], r.metric.removeprefix("quality.column.")) for r in rows if r.labels}
    assert per_column == {
        ("age", "null_rate"), ("age", "null_rate_increase"), ("age", "null_spike"),
        ("age", "out_of_range_share"), ("age", "out_of_range_spike"),
        ("plan", "null_rate"), ("plan", "null_rate_increase"), ("plan", "null_spike"),
        ("plan", "unseen_category_share"), ("plan", "unseen_categories"),
        ("income", "missing"), ("channel", "new"),
    }
    assert all(r.sensor == "quality" and r.time == AT and r.model_id == 3 for r in rows)


def test_before_fit_and_bad_parameters_are_refused():
    with pytest.raises(NotFittedError, match="not fitted yet"):
        DataQualitySensor(FEATURES).score(frame(200, seed=0))
    with pytest.raises(InvalidParameterError, match="The 'range_quantiles' parameter of DataQualitySensor must be a "
                                                    r"pair of floats \(low, high\) with 0 <= low < high <= 1"):
        DataQualitySensor(FEATURES, range_quantiles=(0.9, 0.1))
    with pytest.raises(InvalidParameterError, match="The 'null_rate_increase' parameter of DataQualitySensor"):
        DataQualitySensor(FEATURES, null_rate_increase=1.5)


def test_the_config_builds_the_sensor():
    config = QualityConfig(null_rate_increase=0.1, range_quantiles=(0.01, 0.99), min_samples=50)
    sensor = DataQualitySensor.from_config(FEATURES, config)
    assert (sensor.null_rate_increase, sensor.range_quantiles, sensor.min_samples, sensor.alpha) == (
        0.1, (0.01, 0.99), 50, 0.01)
    assert "DataQualitySensor(numeric=['age', 'income']" in repr(sensor)
