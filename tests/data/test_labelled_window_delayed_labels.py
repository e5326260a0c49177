"""labelled_window joins predictions to the labels that had arrived by as_of, the latest per id."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import numpy as np
import pandas as pd
import pytest

from mape.data import FileSource, labelled_window
from mape.errors import InvalidParameterError

T0 = datetime(2026, 1, 5, tzinfo=timezone.utc)


def minutes(m: float) -> datetime:
    return T0 + timedelta(minutes=m)


@pytest.fixture
def sources(tmp_path):
    inference = pd.DataFrame({
        "id": [1, 2, 3, 4, 5, 6],
        "timestamp": [minutes(m) for m in (0, 10, 20, 30, 40, 70)],  # id 6 is outside [0, 60)
        "x": [0.1, 0.2, 0.3, 0.4, 0.5, 0.6],
        "prediction": [1, 0, 1, 0, 1, 1],
        "model_version": [1, 1, 2, 2, 2, 2],
    })
    inference.to_parquet(tmp_path / "inference.parquet")
    labels = pd.DataFrame({
        "id": [1, 2, 2, 3, 4, 6, 5],
        "timestamp": [minutes(m) for m in (
            5,    # id 1 arrives quickly
            50,   # id 2: first label ...
            90,   # ... corrected later: wins only when as_of >= 90
            120,  # id 3 arrives exactly at as_of=120
            121,  # id 4 arrives just after as_of=120: not used
            75,   # id 6: labelled, but its prediction is outside the window
            30,   # id 5: stored out of order
        )],
        "label": [1, 1, 0, 0, 0, 1, 1],
    })
    labels.to_csv(tmp_path / "labels.csv", index=False)
    return FileSource(tmp_path / "inference.parquet", kind="parquet"), FileSource(tmp_path / "labels.csv", kind="csv")


def window(sources, as_of: datetime, **kwargs) -> pd.DataFrame:
    inference, labels = sources
    return labelled_window(inference, labels, start=minutes(0), end=minutes(60), as_of=as_of,
                           prediction_column="prediction", label_column="label", **kwargs)


def test_only_labels_arrived_by_as_of_are_joined_and_the_latest_wins(sources):
    got = window(sources, as_of=minutes(120))

    assert list(got.columns) == ["id", "timestamp", "prediction", "label"]
    assert got["id"].tolist() == [1, 2, 3, 5]  # 4's label arrives after as_of; 6 was predicted too late
    assert dict(zip(got["id"], got["label"])) == {1: 1, 2: 0, 3: 0, 5: 1}  # id 2's correction at 90 wins
    assert got["timestamp"].tolist() == [minutes(m) for m in (0, 10, 20, 40)]


def test_an_earlier_as_of_replays_what_was_known_then(sources):
    got = window(sources, as_of=minutes(60))

    assert dict(zip(got["id"], got["label"])) == {1: 1, 2: 1, 5: 1}  # id 2 still has its first label


def test_features_and_version_come_along_in_order(sources):
    got = window(sources, as_of=minutes(200), feature_columns=["x"], version_column="model_version")

    assert list(got.columns) == ["id", "timestamp", "x", "prediction", "label", "model_version"]
    assert got["id"].tolist() == [1, 2, 3, 4, 5]
    assert got["x"].tolist() == [0.1, 0.2, 0.3, 0.4, 0.5]
    assert got["model_version"].tolist() == [1, 1, 2, 2, 2]


def test_no_predictions_give_an_empty_frame_with_the_columns(sources):
    inference, labels = sources
    got = labelled_window(inference, labels, start=minutes(600), end=minutes(660), as_of=minutes(700),
                          prediction_column="prediction", label_column="label", version_column="model_version")

    assert got.empty
    assert list(got.columns) == ["id", "timestamp", "prediction", "label", "model_version"]


def test_integer_and_text_ids_still_join(tmp_path, sources):
    inference, _ = sources
    pd.DataFrame({"id": ["1", "3"], "timestamp": [minutes(1), minutes(30)], "label": [0, 1]}).astype(
        {"id": "string"}).to_parquet(tmp_path / "text_labels.parquet")
    labels = FileSource(tmp_path / "text_labels.parquet", kind="parquet")

    got = labelled_window(inference, labels, start=minutes(0), end=minutes(60), as_of=minutes(60),
                          prediction_column="prediction", label_column="label")

    assert got["id"].tolist() == [1, 3]
    assert got["label"].tolist() == [0, 1]


def test_a_label_column_named_like_a_log_column_is_refused(sources):
    inference, labels = sources
    with pytest.raises(InvalidParameterError, match="The 'label_column' parameter of labelled_window must be"):
        labelled_window(inference, labels, start=minutes(0), end=minutes(60), as_of=minutes(60),
                        prediction_column="prediction", label_column="prediction")


@pytest.mark.parametrize("seed", range(10))
def test_integer_ids_join_as_text_ids_do_on_random_logs(tmp_path, seed):
    """The integer fast path (sort and binary search) and the general one (index lookup) agree row for row."""
    rng = np.random.default_rng(seed)
    n = int(rng.integers(0, 300))
    predictions = pd.DataFrame({"id": rng.permutation(10 * n + 1)[:n], "timestamp": [minutes(m) for m in
                                                                                   np.sort(rng.uniform(-5, 65, n))],
                                "prediction": rng.integers(0, 2, n)})
    m = int(rng.integers(0, 2 * n + 1))
    labels = pd.DataFrame({"id": rng.choice(predictions["id"], m) if n else np.zeros(m, dtype=int),
                           "timestamp": [minutes(t) for t in rng.uniform(0, 120, m)],  # unsorted, some late
                           "label": pd.array(np.where(rng.uniform(size=m) < 0.1, None, rng.integers(0, 2, m)),
                                             dtype="Int64")})
    labels.loc[labels.index[::7], "timestamp"] = labels["timestamp"].iloc[0] if m else None  # ties of arrival
    for name, ids in (("int", lambda c: c), ("text", lambda c: c.astype(str))):
        predictions.assign(id=ids(predictions["id"])).to_parquet(tmp_path / f"p-{name}.parquet")
        labels.assign(id=ids(labels["id"])).to_parquet(tmp_path / f"l-{name}.parquet")
    as_of = minutes(float(rng.uniform(0, 130)))
    got = {name: labelled_window(FileSource(tmp_path / f"p-{name}.parquet", kind="parquet"),
                                 FileSource(tmp_path / f"l-{name}.parquet", kind="parquet"),
                                 start=minutes(0), end=minutes(60), as_of=as_of,
                                 prediction_column="prediction", label_column="label")
           for name in ("int", "text")}

    assert got["int"]["id"].astype(str).tolist() == got["text"]["id"].tolist()
    assert got["int"]["label"].tolist() == got["text"]["label"].tolist()
    assert got["int"]["timestamp"].is_monotonic_increasing


def test_nullable_integer_ids_with_a_missing_one_join_the_others(tmp_path):
    inference = pd.DataFrame({"id": pd.array([1, None, 3], dtype="Int64"),
                              "timestamp": [minutes(m) for m in (0, 10, 20)], "prediction": [1, 0, 1]})
    inference.to_parquet(tmp_path / "inference.parquet")
    pd.DataFrame({"id": pd.array([3, 1], dtype="Int64"), "timestamp": [minutes(30), minutes(40)],
                  "label": [0, 1]}).to_parquet(tmp_path / "labels.parquet")

    got = labelled_window(FileSource(tmp_path / "inference.parquet", kind="parquet"),
                          FileSource(tmp_path / "labels.parquet", kind="parquet"), start=minutes(0),
                          end=minutes(60), as_of=minutes(60), prediction_column="prediction", label_column="label")

    assert got["id"].tolist() == [1, 3] and got["label"].tolist() == [1, 0]
