"""What one strategy did on one stream: the record every metric is computed from.

Who calls it: the strategies (:mod:`benchmarks.adaptation.strategies` and
:mod:`benchmarks.adaptation.run_mape`) fill a :class:`Trace` tick by tick;
:mod:`benchmarks.adaptation.metrics` reads it. Ticks are numbered from 1;
list index ``i`` holds tick ``i + 1``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd


@dataclass(frozen=True)
class Action:
    """One action a strategy took.

    Attributes
    ----------
    tick : int
        The tick it ran in (its effect, if any, serves from batch ``tick + 1``).
    kind : str
        ``retrain`` or ``rollback``.
    outcome : str
        ``deployed`` (baselines always deploy), ``promoted``, ``rejected`` (the promotion gate said no),
        ``rolled back`` or ``failed``.
    decided : int or None
        The tick of the decision behind it (the oracle decides at the change, acts later).
    """

    tick: int
    kind: str
    outcome: str
    decided: int | None = None


@dataclass
class Trace:
    """Per tick: the served model's true accuracy and fairness gap; and the actions, decisions and symptoms."""

    strategy: str
    scenario: str
    seed: int
    accuracy: list[float] = field(default_factory=list)
    gap: list[float] = field(default_factory=list)
    version: list[int] = field(default_factory=list)
    actions: list[Action] = field(default_factory=list)
    decisions: list[tuple[int, str]] = field(default_factory=list)
    symptoms: list[tuple[int, str]] = field(default_factory=list)
    energy_kwh: float | None = 0.0
    train_cpu_s: float = 0.0
    engine: dict[str, Any] = field(default_factory=dict)

    def record(self, accuracy: float, gap: float, version: int) -> None:
        self.accuracy.append(float(accuracy))
        self.gap.append(float(gap))
        self.version.append(int(version))

    @property
    def retrains(self) -> list[Action]:
        """Retrains that ran (a candidate the gate rejected still cost its training)."""
        return [a for a in self.actions if a.kind == "retrain" and a.outcome != "failed"]

    def add_energy(self, kwh: float | None) -> None:
        """Sum the energy of the runs; one unmeasured run makes the total unknown (never a guessed 0)."""
        self.energy_kwh = None if kwh is None or self.energy_kwh is None else self.energy_kwh + kwh


def score(predictions: np.ndarray, batch: pd.DataFrame) -> tuple[float, float]:
    """(accuracy, demographic parity difference between the groups) of one batch's served predictions.

    >>> batch = pd.DataFrame({"label": [1, 0, 1, 0], "group": ["A", "A", "B", "B"]})
    >>> score(np.array([1, 0, 1, 1]), batch)
    (0.75, 0.5)
    """
    predictions = np.asarray(predictions).astype(int)
    accuracy = float(np.mean(predictions == batch["label"].to_numpy()))
    groups = batch["group"].to_numpy()
    rates = [float(predictions[groups == g].mean()) for g in np.unique(groups)]
    return accuracy, (max(rates) - min(rates)) if len(rates) > 1 else 0.0
