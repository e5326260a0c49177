"""Join the predictions of a time window to the ground truth that had arrived by a given time.

Who calls it: the monitor's performance sensor (predictions of the last
``performance.window``, labelled by the tick time) and the execute stage
(training and evaluation data). Labels arrive later than predictions, by any
delay; asking ``as_of`` a past time replays what was known then, so a replayed
tick sees exactly what the original tick saw.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

import numpy as np
import pandas as pd

from mape._util.timeutil import ensure_utc
from mape.data.sources import TableSource, floor_ticks, select
from mape.errors import InvalidParameterError

_KEY = "__mape_join_key__"


def labelled_window(
    inference: TableSource,
    labels: TableSource,
    *,
    start: datetime,
    end: datetime,
    as_of: datetime,
    prediction_column: str,
    label_column: str,
    feature_columns: Sequence[str] | None = None,
    version_column: str | None = None,
) -> pd.DataFrame:
    """The predictions made in ``[start, end)`` with the labels that had arrived by ``as_of``.

    A label row counts when its own timestamp is at or before ``as_of`` and
    its label is not null; when an id has several, the latest arrived wins
    (on equal timestamps, the row read last). Predictions without a label are
    dropped (an inner join). Label rows are read from ``start`` on: a label
    never arrives before the prediction it labels.

    Parameters
    ----------
    inference : TableSource
        The inference log: id, timestamp, features, prediction, optionally version.
    labels : TableSource
        Ground truth: id, arrival timestamp, label.
    start, end : datetime
        The window of prediction times, half-open.
    as_of : datetime
        Labels that arrived later than this are ignored.
    prediction_column, label_column : str
        The prediction column of the log and the label column of the labels.
    feature_columns : sequence of str, optional
        Feature columns of the log to return as well.
    version_column : str, optional
        Column of the log naming the model version that served each row.

    Returns
    -------
    pandas.DataFrame
        Columns ``id, timestamp, *features, prediction, label[, version]``
        under the inference log's names (and ``label_column``), sorted by
        prediction time.

    Raises
    ------
    DataSourceError
        A source lacks a column or cannot be read.
    """
    start, end, as_of = ensure_utc(start), ensure_utc(end), ensure_utc(as_of)
    id_column, time_column = inference.id_column, inference.timestamp_column
    versions = [version_column] if version_column else []
    left = [id_column, time_column, *(feature_columns or []), prediction_column, *versions]
    if label_column in left:
        raise InvalidParameterError.for_parameter(
            "label_column", "labelled_window",
            "a name distinct from the id, timestamp, feature, prediction and version columns", label_column,
        )
    columns = [*left[:len(left) - len(versions)], label_column, *versions]

    predictions = inference.read(start, end, columns=left)  # the timestamp first: ordered as ``columns`` below
    if len(set(left)) < len(left):
        predictions = predictions[left]  # a column asked for twice comes back twice
    if predictions.empty:
        return pd.DataFrame({c: predictions[c] if c in predictions else pd.Series(dtype=object) for c in columns})

    arrived = labels.read(start, as_of + timedelta(microseconds=1), columns=[labels.id_column, label_column])
    values = arrived[label_column]
    stamps = arrived[labels.timestamp_column].array  # UTC, as every read returns them
    counted = values.notna().to_numpy() & (stamps.asi8 <= floor_ticks(as_of, stamps.unit))
    label_ids = arrived[labels.id_column].to_numpy()
    prediction_ids = predictions[id_column]
    if prediction_ids.dtype == label_ids.dtype and isinstance(label_ids.dtype, np.dtype) and \
            label_ids.dtype.kind in "iu":  # (nullable integers are not numpy integers: the general path)
        # integer ids: the latest label of each id by a sort, the join by a binary search (no pandas index)
        known, rows = _latest(label_ids, counted)
        wanted = prediction_ids.to_numpy()
        where = np.minimum(np.searchsorted(known, wanted), max(len(known) - 1, 0))
        taken = np.flatnonzero(known[where] == wanted) if len(known) else np.empty(0, dtype=np.intp)
        labelled = values.array.take(rows[where[taken]])
    else:
        ids, kept = arrived[labels.id_column][counted], values[counted]
        latest = ~ids.duplicated(keep="last").to_numpy()
        ids, kept = ids[latest], kept[latest]
        if prediction_ids.dtype != ids.dtype:  # a merge settles the ids' types (and their text when one is numeric)
            return _merged(predictions, ids, kept, columns, id_column, time_column)
        # an inner join on ids of one type, each with one label now: an index lookup (a merge costs several times more)
        position = pd.Index(ids).get_indexer(prediction_ids)
        taken = np.flatnonzero(position >= 0)
        labelled = kept.array.take(position[taken])
    if len(set(columns)) < len(columns):  # a column asked for twice: frames keep repeated names, dicts do not
        joined = select(predictions.take(taken).assign(**{label_column: labelled}), columns)
    else:  # one take of the rows, the label put in its place (each step on a frame costs more than the copying)
        joined = predictions.take(taken)
        joined.insert(len(joined.columns) - len(versions), label_column, labelled)
        joined = select(joined, columns)
        joined.index = pd.RangeIndex(len(joined))
    times = joined[time_column].array
    if len(times) > 1 and not bool((times.asi8[1:] >= times.asi8[:-1]).all()):  # the read sorted them
        joined = joined.sort_values(time_column, kind="stable").reset_index(drop=True)
    return joined


def _latest(ids: np.ndarray, counted: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The distinct ids among the ``counted`` rows, sorted, and the row of each one's last (latest) label."""
    rows = np.flatnonzero(counted)
    keys = ids[rows]
    order = np.argsort(keys, kind="stable")  # an id's rows stay in arrival order: its last is the latest
    keys = keys[order]
    last = np.ones(len(keys), dtype=bool)
    last[:-1] = keys[1:] != keys[:-1]
    return keys[last], rows[order[last]]


def _merged(predictions: pd.DataFrame, ids: pd.Series, values: pd.Series, columns: list[str], id_column: str,
            time_column: str) -> pd.DataFrame:
    """The inner join of predictions and the latest labels, ids of different types: by value, or as text."""
    latest = pd.DataFrame({id_column: ids.array, values.name: values.array})
    if _comparable(predictions[id_column], latest[id_column]):
        joined = predictions.merge(latest, on=id_column, how="inner")
    else:  # e.g. integer ids in Parquet, string ids in CSV: join on the text
        joined = predictions.assign(**{_KEY: predictions[id_column].astype(str)}).merge(
            latest.assign(**{_KEY: latest[id_column].astype(str)}).drop(columns=id_column), on=_KEY, how="inner",
        ).drop(columns=_KEY)
    return joined[columns].sort_values(time_column, kind="stable").reset_index(drop=True)


def _comparable(left: pd.Series, right: pd.Series) -> bool:
    """Whether two id columns can be joined as they are (both numeric, or both not)."""
    numeric = pd.api.types.is_numeric_dtype
    return numeric(left.dtype) == numeric(right.dtype)
