"""The credit model in production: scores each hour's requests with the version in production.

Who calls it: the demo, once per simulated hour, before the controller's tick.
It plays the part of a real serving stack: it asks the knowledge base which
version is in production (so a promotion or rollback by mape changes what
serves), writes the inference log (features, prediction, serving version) and
the labels, each label stamped with the time it arrives, as Parquet files.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sqlalchemy.engine import Engine

from examples.credit.stream import CATEGORICAL, NUMERIC, generate
from knowledge import registry
from knowledge.database import session_scope
from mape.execute.training import load_artifact

FEATURES = NUMERIC + CATEGORICAL


@dataclass
class CreditServing:
    """Writes ``inference/hour-NNNN.parquet`` and ``labels/hour-NNNN.parquet`` under ``data_dir``.

    Parameters
    ----------
    data_dir : Path
        Root of the inference log and the labels.
    engine : Engine
        The knowledge base, to find the production version.
    model_name : str
        The managed model's name.
    rows_per_hour : int
        Requests per simulated hour.
    label_delay : timedelta
        How long after the request its label arrives.
    seed : int
        Seed of the stream; the same seed gives the same demo.
    """

    data_dir: Path
    engine: Engine
    model_name: str
    rows_per_hour: int = 1000
    label_delay: timedelta = timedelta(minutes=45)
    seed: int = 7
    _rng: np.random.Generator = field(init=False)
    _loaded: dict[int, Any] = field(default_factory=dict, init=False)
    _next_id: int = field(default=0, init=False)

    def __post_init__(self) -> None:
        self._rng = np.random.default_rng(self.seed)
        (self.data_dir / "inference").mkdir(parents=True, exist_ok=True)
        (self.data_dir / "labels").mkdir(parents=True, exist_ok=True)

    def production(self) -> tuple[int, Any]:
        with session_scope(self.engine) as session:
            model = registry.get_model(session, self.model_name)
            version = registry.production_version(session, model.id)
            if version is None:
                raise LookupError(f"model {self.model_name} has no production version to serve with")
            number, uri = version.version, version.artifact_uri
        if number not in self._loaded:  # only the version serving now is kept, as a model server keeps one
            self._loaded = {number: load_artifact(uri)}
        return number, self._loaded[number]

    def requests(self, start: datetime, *, drifted: bool, hours: int = 1) -> pd.DataFrame:
        """Generate the requests of ``hours`` hours from ``start``, with true labels and timestamps."""
        n = self.rows_per_hour * hours
        batch = generate(n, drifted=drifted, rng=self._rng)
        offsets = np.sort(self._rng.uniform(0, 3600 * hours, size=n))
        batch.insert(0, "timestamp", pd.to_datetime(start) + pd.to_timedelta(offsets, unit="s"))
        batch.insert(0, "request_id", [f"r{self._next_id + i:08d}" for i in range(n)])
        self._next_id += n
        return batch

    def serve(self, name: str, batch: pd.DataFrame, *, corrupt_labels: float = 0.0) -> dict[str, Any]:
        """Score ``batch`` with the production version; write its log and its (possibly corrupted) labels."""
        version, estimator = self.production()
        log = batch.drop(columns=["label"]).copy()
        log["prediction"] = estimator.predict(batch[FEATURES]).astype(int)
        log["model_version"] = version
        log.to_parquet(self.data_dir / "inference" / f"{name}.parquet", index=False)
        labels = batch["label"].to_numpy().copy()
        if corrupt_labels:
            flip = self._rng.random(len(labels)) < corrupt_labels
            labels[flip] = 1 - labels[flip]
        pd.DataFrame({
            "request_id": batch["request_id"], "labelled_at": batch["timestamp"] + self.label_delay, "label": labels,
        }).to_parquet(self.data_dir / "labels" / f"{name}.parquet", index=False)
        accuracy = float(np.mean(log["prediction"].to_numpy() == batch["label"].to_numpy()))
        return {"version": version, "true_accuracy": accuracy, "rows": len(batch)}
