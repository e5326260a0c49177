"""Tabular data sources: the inference log and the ground-truth labels of a managed model.

Who calls it: the monitor reads drift windows and labelled windows through
these classes, and the execute stage reads training data the same way. The
layer below the stages: it imports nothing from :mod:`mape.monitor` or any
other stage.

:func:`open_source` turns a source configuration (Parquet or CSV files, or a
SQL table) into a :class:`TableSource`; :func:`labelled_window` joins
predictions to the labels that had arrived by a given time.
"""

from __future__ import annotations

from mape.data.labelled import labelled_window
from mape.data.sources import CachedWindow, FileSource, SqlSource, TableSource, open_source

__all__ = ["CachedWindow", "FileSource", "SqlSource", "TableSource", "labelled_window", "open_source"]
