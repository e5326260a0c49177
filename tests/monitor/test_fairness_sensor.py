"""FairnessSensor: fairlearn's numbers per group and gap, too small groups left out, bootstrap intervals."""

from __future__ import annotations

import math
from datetime import datetime, timedelta, timezone

import numpy as np
import pandas as pd
import pytest
from fairlearn import metrics as flm
from sklearn.metrics import accuracy_score

from mape.config import FairnessConfig
from mape.errors import InvalidParameterError
from mape.monitor.sensors.fairness import (
    GAPS,
    SUMMARY_FIELDS,
    FairnessReport,
    FairnessSensor,
    fairness_observations,
)
from mape.plan.fields import CONTEXT_FIELDS

AT = datetime(2026, 1, 5, tzinfo=timezone.utc)
DIFFERENCES = tuple(gap for gap in GAPS if gap != "demographic_parity_ratio")


def window(n: int, *, seed: int, selection: dict[tuple[str, str], float] | None = None,
           base: float = 0.4) -> pd.DataFrame:
    """Labelled predictions with sex and age_band; ``selection`` sets the selection rate of some (sex, age) cells.

    Predictions depend on the label (a useful model) and on the cell's selection rate.
    """
    rng = np.random.default_rng(seed)
    sex = rng.choice(["F", "M"], size=n)
    age = rng.choice(["18-30", "31-50", "51+"], size=n, p=[0.3, 0.4, 0.3])
    label = rng.integers(0, 2, size=n)
    rate = np.full(n, base)
    for (s, a), value in (selection or {}).items():
        rate[(sex == s) & ((age == a) | (a == "*"))] = value
    # P(pred = 1) = rate, split so that positives are selected more often than negatives.
    p_pos, p_neg = np.clip(rate + 0.2, 0, 1), np.clip(rate - 0.2, 0, 1)
    prediction = (rng.uniform(size=n) < np.where(label == 1, p_pos, p_neg)).astype(int)
    return pd.DataFrame({"sex": sex, "age_band": age, "label": label, "prediction": prediction})


def sensor(**kwargs) -> FairnessSensor:  # type: ignore[no-untyped-def]
    kwargs = {"sensitive": ["sex", "age_band"], **kwargs}
    return FairnessSensor(label_column="label", prediction_column="prediction", **kwargs)


def test_point_estimates_equal_fairlearns_own_functions_on_the_rows():
    data = window(1500, seed=0, selection={("F", "*"): 0.3, ("M", "51+"): 0.55})
    report = sensor().score(data)

    y, p = data["label"], data["prediction"]
    by = {"sex": data["sex"], "age_band": data["age_band"], "sex & age_band": data[["sex", "age_band"]]}
    for attribute, features in by.items():
        gaps = report.attribute(attribute).gaps
        assert set(gaps) == set(GAPS)
        expected = {
            "demographic_parity_difference": flm.demographic_parity_difference(y, p, sensitive_features=features),
            "demographic_parity_ratio": flm.demographic_parity_ratio(y, p, sensitive_features=features),
            "equalized_odds_difference": flm.equalized_odds_difference(y, p, sensitive_features=features),
            "equal_opportunity_difference": flm.equal_opportunity_difference(y, p, sensitive_features=features),
            "accuracy_difference": flm.MetricFrame(metrics=accuracy_score, y_true=y, y_pred=p,
                                                   sensitive_features=features).difference(),
        }
        for name, value in expected.items():
            assert gaps[name].value == pytest.approx(value, abs=1e-12), (attribute, name)

    frame = flm.MetricFrame(metrics={"selection_rate": flm.selection_rate, "true_positive_rate": flm.true_positive_rate,
                                     "false_positive_rate": flm.false_positive_rate, "accuracy": accuracy_score},
                            y_true=y, y_pred=p, sensitive_features=data["age_band"])
    for group in report.attribute("age_band").groups:
        assert group.size == int((data["age_band"] == group.group).sum())
        for metric in ("selection_rate", "true_positive_rate", "false_positive_rate", "accuracy"):
            assert getattr(group, metric) == pytest.approx(frame.by_group.loc[group.group, metric], abs=1e-12)


def test_a_fair_model_has_gaps_near_zero_with_intervals_covering_zero():
    report = sensor().score(window(6000, seed=1))

    for attribute in report.attributes:
        for name in DIFFERENCES:
            gap = attribute.gaps[name]
            assert gap.value < 0.06, (attribute.attribute, name, gap)
            assert gap.ci_low == 0.0 < gap.ci_high < 0.2, (attribute.attribute, name, gap)
        ratio = attribute.gaps["demographic_parity_ratio"]
        assert ratio.value > 0.85 and ratio.ci_high == 1.0 > ratio.ci_low
    assert report.too_small == ()


def test_a_model_biased_against_one_group_has_the_constructed_gap_and_an_interval_excluding_zero():
    # 20k rows and two attributes: also the timing case of the design notes (a fraction of a second).
    data = window(20_000, seed=2, selection={("F", "*"): 0.25}, base=0.45)
    report = sensor().score(data)

    sex = report.attribute("sex").gaps["demographic_parity_difference"]
    assert sex.value == pytest.approx(0.20, abs=0.02)
    assert 0.0 < sex.ci_low < 0.20 < sex.ci_high
    assert sex.ci_high - sex.ci_low < 0.05
    ratio = report.attribute("sex").gaps["demographic_parity_ratio"]
    assert ratio.ci_low < 0.25 / 0.45 < ratio.ci_high < 1.0
    age = report.attribute("age_band").gaps["demographic_parity_difference"]
    assert age.ci_low == 0.0  # the bias is by sex only
    # The summary is the worst over attributes; the intersection is at least as unequal as sex alone.
    assert report.demographic_parity_difference == max(a.gaps["demographic_parity_difference"].value
                                                       for a in report.attributes)
    assert report.demographic_parity_difference_upper == max(a.gaps["demographic_parity_difference"].ci_high
                                                             for a in report.attributes)
    assert report.demographic_parity_ratio_lower == min(a.gaps["demographic_parity_ratio"].ci_low
                                                        for a in report.attributes)


def test_a_group_of_ten_rows_is_reported_as_too_small_and_makes_no_gap():
    rng = np.random.default_rng(3)
    data = pd.DataFrame({"region": ["north"] * 500 + ["south"] * 500 + ["islands"] * 10,
                         "label": rng.integers(0, 2, size=1010)})
    data["prediction"] = np.r_[rng.uniform(size=1000) < 0.4, np.ones(10, dtype=bool)].astype(int)  # islands: all 1

    report = sensor(sensitive=["region"]).score(data)

    assert report.too_small == (("region", "islands", 10),)
    big = data[data["region"] != "islands"]
    expected = flm.demographic_parity_difference(big["label"], big["prediction"], sensitive_features=big["region"])
    assert report.demographic_parity_difference == pytest.approx(expected, abs=1e-12)
    assert report.demographic_parity_difference < 0.1  # with the islands it would be about 0.6
    islands = next(g for g in report.attribute("region").groups if g.group == "islands")
    assert islands.too_small and islands.size == 10 and islands.selection_rate is None
    # fairness-guard's "at least 50 rows in every group": the groups behind the gaps, the 10 rows excluded.
    assert report.smallest_group == 500 and report.n_groups == 2
    rows = fairness_observations(7, AT, report)
    assert [(r.metric, r.value) for r in rows if r.labels.get("group") == "islands"] == [("fairness.group.size", 10.0)]


def test_intersections_are_their_own_attribute():
    # Only older women are selected less: invisible in each attribute alone, plain in the intersection.
    data = window(12_000, seed=4, selection={("F", "51+"): 0.2})
    report = sensor().score(data)

    crossed = report.attribute("sex & age_band")
    assert {g.group for g in crossed.groups} == {f"{s} & {a}" for s in "FM" for a in ("18-30", "31-50", "51+")}
    assert crossed.gaps["demographic_parity_difference"].value == pytest.approx(0.2, abs=0.04)
    assert crossed.gaps["demographic_parity_difference"].ci_low > 0.1
    assert crossed.gaps["demographic_parity_difference"].value > report.attribute("sex").gaps[
        "demographic_parity_difference"].value
    assert report.demographic_parity_difference == crossed.gaps["demographic_parity_difference"].value

    plain = sensor(intersections=False).score(data)
    assert [a.attribute for a in plain.attributes] == ["sex", "age_band"]
    with pytest.raises(KeyError):
        plain.attribute("sex & age_band")


def test_missing_values_are_a_group_and_small_cells_of_the_intersection_are_too_small():
    data = window(3000, seed=13)
    data.loc[:199, "sex"] = None
    data.loc[200:209, "age_band"] = "90+"

    report = sensor().score(data)

    assert {g.group for g in report.attribute("sex").groups} == {"F", "M", "<missing>"}
    assert ("age_band", "90+", 10) in report.too_small
    crossed = {g.group: g for g in report.attribute("sex & age_band").groups}
    assert crossed["<missing> & 31-50"].size == int(((data["sex"].isna()) & (data["age_band"] == "31-50")).sum())
    assert all(crossed[name].too_small for name in crossed if name.endswith("90+"))
    assert report.smallest_group >= 50


def test_a_single_large_group_gives_no_gap_and_a_reason():
    rng = np.random.default_rng(5)
    data = pd.DataFrame({"site": ["a"] * 400 + ["b"] * 20, "label": rng.integers(0, 2, 420),
                         "prediction": rng.integers(0, 2, 420)})

    report = sensor(sensitive=["site"]).score(data)

    site = report.attribute("site")
    assert site.gaps == {} and "1 group(s) with at least 50 rows; a gap needs two" in site.reason
    assert report.too_small == (("site", "b", 20),)
    assert report.demographic_parity_difference is None and report.smallest_group is None
    assert report.summary() == {"n_groups": 0.0}  # a known count: no group was compared
    metrics = {r.metric for r in fairness_observations(1, AT, report)}
    assert not any(m.startswith("fairness.gap.") for m in metrics)
    assert "fairness.demographic_parity_difference" not in metrics and "no fairness gap" in str(report)


def test_observations_never_write_unknown_values_as_zero():
    # Group "c" has no positive labels: its true positive rate is unknown (fairlearn would say 0).
    rng = np.random.default_rng(6)
    n = 300
    data = pd.DataFrame({"g": np.repeat(["a", "b", "c"], n), "label": np.r_[rng.integers(0, 2, 2 * n), np.zeros(n)],
                         "prediction": rng.integers(0, 2, 3 * n)})

    report = sensor(sensitive=["g"], n_bootstrap=0).score(data)
    rows = fairness_observations(1, AT, report)

    c = next(g for g in report.attribute("g").groups if g.group == "c")
    assert c.true_positive_rate is None and c.false_positive_rate is not None
    assert ("fairness.group.true_positive_rate", "c") not in {(r.metric, r.labels.get("group")) for r in rows}
    ab = data[data["g"] != "c"]
    assert report.equal_opportunity_difference == pytest.approx(
        flm.equal_opportunity_difference(ab["label"], ab["prediction"], sensitive_features=ab["g"]), abs=1e-12)
    assert report.equalized_odds_difference == pytest.approx(max(
        report.equal_opportunity_difference,
        flm.false_positive_rate_difference(data["label"], data["prediction"], sensitive_features=data["g"])), abs=1e-12)
    # No intervals without resamples: no ci rows and no summary bounds.
    assert not any(r.metric.endswith((".ci_low", ".ci_high", "_upper", "_lower")) for r in rows)
    assert all(r.value is not None and math.isfinite(r.value) for r in rows)
    assert {r.metric for r in rows if not r.labels} == {f"fairness.{f}" for f in report.summary()}
    # Nothing measured, nothing written.
    for broken in (data.drop(columns="g"), data.assign(label=2), data.iloc[:0]):
        empty = sensor(sensitive=["g"]).score(broken)
        assert empty.reason is not None and fairness_observations(1, AT, empty) == []
        assert empty.summary() == {}


def test_observation_rows_carry_attribute_and_group_labels():
    report = sensor().score(window(2000, seed=7))
    rows = fairness_observations(3, AT, report)

    by_metric = {}
    for row in rows:
        by_metric.setdefault(row.metric, []).append(row.labels)
        assert row.sensor == "fairness" and row.model_id == 3 and row.time == AT
    assert by_metric["fairness.demographic_parity_difference"] == [{}]
    assert {labels["attribute"] for labels in by_metric["fairness.gap.demographic_parity_difference.ci_high"]} == {
        "sex", "age_band", "sex & age_band"}
    assert {"attribute": "sex & age_band", "group": "F & 51+"} in by_metric["fairness.group.selection_rate"]
    assert len(by_metric["fairness.group.size"]) == 2 + 3 + 6


def test_the_bootstrap_is_reproducible_with_the_same_seed():
    data = window(3000, seed=8, selection={("F", "*"): 0.3})
    first, again = (sensor(sensitive=["sex"], random_state=11).score(data) for _ in range(2))
    other = sensor(sensitive=["sex"], random_state=12).score(data)

    assert first == again
    first, other = (r.attribute("sex").gaps["demographic_parity_difference"] for r in (first, other))
    assert first.value == other.value and (first.ci_low, first.ci_high) != (other.ci_low, other.ci_high)


def test_the_multinomial_resample_is_the_stratified_row_bootstrap():
    """The sensor draws each group's outcome counts; resampling the rows themselves gives the same interval."""
    data = window(4000, seed=9, selection={("F", "*"): 0.3})
    gap = sensor(sensitive=["sex"], n_bootstrap=2000, random_state=0).score(data).attribute("sex").gaps[
        "demographic_parity_difference"]

    rng = np.random.default_rng(1)
    rows = {s: data.loc[data["sex"] == s, "prediction"].to_numpy() for s in ("F", "M")}
    resampled = {s: values[rng.integers(0, len(values), size=(2000, len(values)))].mean(axis=1)
                 for s, values in rows.items()}
    low, high = np.percentile(resampled["M"] - resampled["F"], [2.5, 97.5])
    assert gap.ci_low == pytest.approx(low, abs=0.005) and gap.ci_high == pytest.approx(high, abs=0.005)


def test_only_the_rows_of_the_version_asked_for_are_compared():
    fair, biased = window(2000, seed=10), window(2000, seed=11, selection={("F", "*"): 0.1})
    data = pd.concat([fair.assign(model_version="v1"), biased.assign(model_version="v2")])
    s = sensor(sensitive=["sex"], version_column="model_version")

    first, second = s.score(data, version=1), s.score(data, version=2)

    assert first.n_rows == second.n_rows == 2000
    assert second.demographic_parity_difference > 0.2 > first.demographic_parity_difference


def test_labels_may_be_booleans_and_rows_without_label_or_prediction_are_dropped():
    data = window(1000, seed=12)
    data["label"] = data["label"].astype(bool)
    data.loc[:9, "prediction"] = np.nan

    report = sensor(sensitive=["sex"]).score(data)

    assert report.n_rows == 990 and report.demographic_parity_difference is not None


def test_the_summary_fields_are_the_declared_context_fields():
    assert set(SUMMARY_FIELDS) == CONTEXT_FIELDS["fairness"].fields
    assert isinstance(FairnessReport(n_rows=0).summary(), dict)


def test_the_sensor_is_built_from_its_configuration():
    config = FairnessConfig(sensitive=["sex", "age_band"], min_group_size=30, n_bootstrap=50, window="12h")

    s = FairnessSensor.from_config(config, label_column="y", prediction_column="p", version_column="v")

    assert (s.sensitive, s.min_group_size, s.n_bootstrap, s.confidence, s.intersections) == (
        ["sex", "age_band"], 30, 50, 0.95, True)
    assert (s.label_column, s.prediction_column, s.version_column) == ("y", "p", "v")
    assert config.window == timedelta(hours=12) and FairnessConfig(sensitive=["x"]).window == timedelta(days=1)
    for bad in ({"sensitive": []}, {"sensitive": ["a", "a"]}, {"sensitive": ["a"], "window": "0s"},
                {"sensitive": ["a"], "confidence": 1.0}, {"sensitive": ["a"], "n_bootstrap": -1}):
        with pytest.raises(ValueError):
            FairnessConfig(**bad)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"sensitive": []}, "The 'sensitive' parameter of FairnessSensor must be a non-empty list of distinct column "
                        r"names. Got \[\] instead."),
    ({"sensitive": ["a", "a"]}, "must be a non-empty list of distinct column names"),
    ({"min_group_size": 0}, r"The 'min_group_size' parameter of FairnessSensor must be an int in \[1, inf\)"),
    ({"n_bootstrap": -1}, "The 'n_bootstrap' parameter"),
    ({"confidence": 1.0}, r"The 'confidence' parameter of FairnessSensor must be a float in \(0, 1\). Got 1.0"),
    ({"intersections": "yes"}, "The 'intersections' parameter of FairnessSensor must be a bool"),
    ({"random_state": -1}, r"The 'random_state' parameter of FairnessSensor must be an int in \[0, inf\) or None"),
])
def test_bad_parameters_are_refused_at_construction(kwargs, message):  # type: ignore[no-untyped-def]
    with pytest.raises(InvalidParameterError, match=message):
        sensor(**kwargs)
