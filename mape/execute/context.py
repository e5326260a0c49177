"""What an effector receives besides its parameters: the run, the model, settings and data access.

Who calls it: the executor builds one :class:`ActionContext` per attempt and
passes it to the effector together with its validated parameters.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Callable

import pandas as pd
from sqlmodel import Session

from knowledge.tables import ActionRun, Decision, ManagedModel
from mape.config import ModelConfig, NotificationSettings
from mape.data.artifacts import Location
from mape.data.labelled import labelled_window
from mape.data.sources import TableSource, open_source


@dataclass
class ActionContext:
    """The world of one action attempt.

    Attributes
    ----------
    session : Session
        The knowledge-base session of this attempt; the executor commits it.
    run : ActionRun
        The progress record (idempotency key, attempts).
    decision : Decision
        The decision the run carries out, with its evidence.
    model : ManagedModel
        The managed model's row.
    config : ModelConfig
        The managed model's configuration (sources, features, training).
    at : datetime
        The logical time of the tick that runs the action.
    artifacts_dir : Path or str
        Where artifacts of this run are written.
    actor : str
        Who acts, for audit events.
    notifications : NotificationSettings
        The notification channels (the ``notify`` action queues messages for them).
    serving_dir : Path
        State of the local serving target (the ``rescale`` action keeps its replica sets there).
    """

    session: Session
    run: ActionRun
    decision: Decision
    model: ManagedModel
    config: ModelConfig
    at: datetime
    artifacts_dir: Location
    actor: str
    source_factory: Callable[..., TableSource] = open_source
    notifications: NotificationSettings = field(default_factory=NotificationSettings)
    serving_dir: Path = Path("serving")

    def labelled(self, start: datetime, end: datetime) -> pd.DataFrame:
        """Predictions made in ``[start, end)`` joined with the labels that had arrived by ``at``.

        Columns: the features, and the fairness section's sensitive attributes (the promotion gate compares groups).
        """
        cfg = self.config
        return labelled_window(
            self.source_factory(cfg.inference), self.source_factory(cfg.labels_source), start=start, end=end,
            as_of=self.at, prediction_column=cfg.prediction_column, label_column=cfg.label_column,
            feature_columns=[*cfg.features.all, *(c for c in (cfg.fairness.sensitive if cfg.fairness else ())
                                                  if c not in cfg.features.all)],
            version_column=cfg.version_column,
        )
