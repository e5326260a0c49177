"""AlibiTabularDetector: alibi-detect's TabularDrift in one call, one mape result per feature."""

from __future__ import annotations

import pickle

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("alibi_detect")

from alibi_detect.cd import TabularDrift  # noqa: E402

from mape.errors import NotFittedError  # noqa: E402
from mape.monitor.detectors import ChiSquareDetector, KSDetector  # noqa: E402
from mape.monitor.detectors.alibi import AlibiChiSquareDetector, AlibiKSDetector, AlibiTabularDetector  # noqa: E402

pytestmark = pytest.mark.alibi


def table(rng: np.random.Generator, n: int, *, shift: float = 0.0,
          mix: tuple[float, ...] = (0.5, 0.3, 0.2)) -> pd.DataFrame:
    return pd.DataFrame({"x": rng.normal(shift, 1.0, n), "y": rng.exponential(2.0, n),
                         "colour": rng.choice(np.array(["red", "green", "blue"], dtype=object), size=n, p=mix),
                         "z": rng.normal(size=n)})


def test_feature_p_values_equal_tabular_drift_called_directly_on_coded_data():
    rng = np.random.default_rng(1)
    reference, current = table(rng, 1000), table(rng, 600, shift=0.2, mix=(0.4, 0.3, 0.3))
    order = list(dict.fromkeys(reference["colour"]))  # the wrapper codes categories in order of appearance
    as_array = [frame.assign(colour=frame["colour"].map({c: i for i, c in enumerate(order)})).to_numpy(dtype=float)
                for frame in (reference, current)]
    direct = TabularDrift(as_array[0], p_val=0.05, categories_per_feature={2: None}, correction="fdr")
    expected = direct.predict(as_array[1], drift_type="feature")["data"]

    results = AlibiTabularDetector(categorical=["colour"]).fit(reference).score(current)

    assert list(results) == ["x", "y", "colour", "z"]
    assert [r.p_value for r in results.values()] == [float(p) for p in expected["p_val"]]
    assert [r.statistic for r in results.values()] == [float(d) for d in expected["distance"]]
    assert [r.test for r in results.values()] == ["ks", "ks", "chi2", "ks"]


def test_each_feature_matches_the_one_column_wrappers_and_the_builtin_effect_sizes():
    rng = np.random.default_rng(2)
    reference, current = table(rng, 1500), table(rng, 700, shift=0.3)

    results = AlibiTabularDetector(categorical=["colour"]).fit(reference).score(current)

    for name in ("x", "y", "z"):
        single = AlibiKSDetector().fit(reference[name]).score(current[name])
        assert results[name] == single
        assert results[name].effect_size == KSDetector().fit(reference[name]).score(current[name]).effect_size
    colour = results["colour"]
    assert colour == AlibiChiSquareDetector().fit(reference["colour"]).score(current["colour"])
    assert colour.effect_size == ChiSquareDetector().fit(reference["colour"]).score(current["colour"]).effect_size
    assert results["x"].drift_detected and not results["z"].drift_detected


def test_unseen_categories_count_as_drift_and_rows_with_a_missing_value_are_dropped():
    rng = np.random.default_rng(3)
    reference, current = table(rng, 800), table(rng, 400)
    current.loc[:99, "colour"] = "purple"
    reference.loc[:9, "x"] = np.nan
    current.loc[100:104, "y"] = np.nan

    results = AlibiTabularDetector(categorical=["colour"], categorical_effect="psi").fit(reference).score(current)

    assert results["colour"].drift_detected and results["colour"].effect_name == "psi"
    assert all((r.n_reference, r.n_missing_reference, r.n_current, r.n_missing_current) == (790, 10, 395, 5)
               for r in results.values())


def test_arrays_are_read_by_position_and_the_detector_pickles():
    rng = np.random.default_rng(4)
    reference, current = rng.normal(size=(500, 3)), rng.normal(size=(300, 3))
    current[:, 1] += 0.5
    detector = AlibiTabularDetector(alpha=0.01).fit(reference)

    results = detector.score(current)

    assert list(results) == [0, 1, 2]
    assert [r.drift_detected for r in results.values()] == [False, True, False]
    assert pickle.loads(pickle.dumps(detector)).score(current) == results


def test_errors_before_fit_unknown_categorical_columns_and_missing_columns():
    with pytest.raises(NotFittedError):
        AlibiTabularDetector().score(np.zeros((3, 2)))
    with pytest.raises(ValueError, match=r"categorical columns \['colour'\]"):
        AlibiTabularDetector(categorical=["colour"]).fit(pd.DataFrame({"x": [1.0, 2.0]}))
    detector = AlibiTabularDetector().fit(pd.DataFrame({"x": [1.0, 2.0, 3.0], "y": [1.0, 2.0, 3.0]}))
    with pytest.raises(ValueError, match=r"lacks the reference's columns \['y'\]"):
        detector.score(pd.DataFrame({"x": [1.0, 2.0]}))
