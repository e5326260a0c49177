"""Streams with known ground truth for the adaptation-quality benchmark.

Who calls it: :mod:`benchmarks.adaptation.strategies` and
:mod:`benchmarks.adaptation.run_mape`, which serve the same batches to every
strategy, and :mod:`benchmarks.adaptation.metrics`, which reads the true
change points. One tick is one simulated hour; batch ``k`` holds the requests
of the hour that ends at tick ``k`` (``k <= 0`` is the history the first
version is trained on).

The world. Three numeric features ``x0, x1, x2`` (normal, unit spread) and a
categorical ``channel``; a protected attribute ``group`` (A 70 %, B 30 %) that
the model does not read. The label is 1 with probability
``sigmoid(3 * f(x))`` where concept A is ``f = 2.5 sin(x0) + 1.2 x1 - 0.8 x2``
and concept B flips the signs of ``x1`` and ``x2``. The model is a logistic
regression (``examples.credit.model:train``): linear, so it fits ``sin(x0)``
only locally. Moving ``x0`` from around 0 (where ``sin`` rises) to around 2.6
(where it falls) is therefore a covariate shift that a model trained before it
gets backwards, and one trained after it gets right again: a retrain is the
remedy, and pre-change accuracy is reachable after it.

Scenarios (240 ticks, change at tick 80 unless said):

``stationary``
    Nothing changes; every retrain is a false one.
``noisy``
    No lasting change; batches of 200 rows (accuracy swings past thresholds
    from sampling alone) and bursts of one to three ticks in which ``x0`` and
    ``x1`` jump and come back. Every retrain is a false one.
``abrupt-covariate``
    ``x0`` mean 0 → 2.6, ``x1`` mean 0 → 1.0 and the channel mix change at once.
``gradual-covariate``
    The same shift, reached linearly over 48 ticks from tick 80.
``concept``
    From tick 80 the label follows concept B; the features do not change.
``recurring``
    The shifted population of ``abrupt-covariate`` comes and goes every 60
    ticks (normal, shifted, normal, shifted): changes at 60, 120 and 180.
``fairness``
    From tick 80, group B's records come from a new source that reads ``x1``
    1.5 higher and ``x2`` 1.5 lower than the truth (and B applies mostly via
    the ``partner`` channel throughout); the label still follows the true
    values. The model over-selects group B: a fairness regression in one group.

>>> s = SCENARIOS["abrupt-covariate"]
>>> s.changes, s.oracle_ticks()
((80,), (83,))
>>> batch = s.batch(100, seed=0)
>>> len(batch), sorted(batch.columns)
(500, ['channel', 'group', 'label', 'x0', 'x1', 'x2'])
>>> round(float(batch["x0"].mean()), 1)
2.6
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np
import pandas as pd

NUMERIC = ["x0", "x1", "x2"]
CATEGORICAL = ["channel"]
FEATURES = NUMERIC + CATEGORICAL
SENSITIVE = "group"
CHANNELS = np.array(["online", "branch", "partner"])
TRAIN_WINDOW = 4
"""Ticks of the retrain window (``retrain-on-drift``'s ``window: 4h``); the newest is held out."""

SHIFT = (2.6, 1.0, 0.0)
"""Mean of ``(x0, x1, x2)`` in the shifted population."""


@dataclass(frozen=True)
class State:
    """The world in one hour: feature means, channel mix, concept, group B's recording offset, bursts."""

    means: tuple[float, float, float] = (0.0, 0.0, 0.0)
    channel_p: tuple[float, float, float] = (0.5, 0.3, 0.2)
    concept: str = "A"
    b_offset: tuple[float, float] = (0.0, 0.0)


@dataclass(frozen=True)
class Scenario:
    """A stream and its ground truth.

    Attributes
    ----------
    name : str
        Its key in :data:`SCENARIOS`.
    kind : str
        ``stationary``, ``noisy``, ``abrupt``, ``gradual``, ``concept``, ``recurring`` or ``fairness``.
    description : str
        One sentence for the report.
    ticks : int
        Ticks (simulated hours) served after the history.
    changes : tuple of int
        True change points: the first batch of each new regime (for ``gradual``, where the ramp starts).
    ramp : int
        Ticks the gradual shift takes to reach its end.
    rows : int
        Requests per tick.
    bursts : tuple of (int, int)
        ``noisy``: (first tick, length) of each transient burst.
    index : int
        Mixed into the seed so scenarios do not share batches.
    """

    name: str
    kind: str
    description: str
    ticks: int = 240
    changes: tuple[int, ...] = ()
    ramp: int = 0
    rows: int = 500
    bursts: tuple[tuple[int, int], ...] = ()
    index: int = 0
    fairness: bool = field(default=False)

    @property
    def false_alarm_stream(self) -> bool:
        """Streams without a lasting change: every retrain on them is a false retrain."""
        return self.kind in ("stationary", "noisy")

    def oracle_ticks(self) -> tuple[int, ...]:
        """When the oracle retrains: at the first tick whose training window holds only the new regime.

        The window of a retrain at tick ``t`` is batches ``t-3 .. t`` with
        ``t`` held out, so it trains on ``t-3 .. t-1``: for a change at ``c``
        that is ``t = c + 3``. A gradual shift gets one retrain when the ramp
        is half way and one when it ends.
        """
        lag = TRAIN_WINDOW - 1
        if self.kind == "gradual":
            points = [self.changes[0] + self.ramp // 2, self.changes[0] + self.ramp]
        else:
            points = list(self.changes)
        return tuple(p + lag for p in points if p + lag <= self.ticks)

    def episodes(self) -> list[tuple[int, int]]:
        """(onset, end) of each change: until the next change or the end of the stream."""
        ends = list(self.changes[1:]) + [self.ticks + 1]
        return list(zip(self.changes, ends))

    def state(self, tick: int) -> State:
        shifted = State(means=SHIFT, channel_p=(0.2, 0.3, 0.5))
        if self.kind == "abrupt":
            return shifted if tick >= self.changes[0] else State()
        if self.kind == "gradual":
            share = min(1.0, max(0.0, (tick - self.changes[0] + 1) / self.ramp))
            means = tuple(share * m for m in SHIFT)
            channel = tuple((1 - share) * a + share * b for a, b in zip(State().channel_p, shifted.channel_p))
            return State(means=means, channel_p=channel)  # type: ignore[arg-type]
        if self.kind == "concept":
            return State(concept="B" if tick >= self.changes[0] else "A")
        if self.kind == "recurring":
            regime = sum(1 for c in self.changes if tick >= c)
            return shifted if regime % 2 else State()
        if self.kind == "fairness":
            return State(b_offset=(1.5, -1.5) if tick >= self.changes[0] else (0.0, 0.0))
        if self.kind == "noisy":
            for first, length in self.bursts:
                if first <= tick < first + length:
                    return State(means=(1.2, 1.2, 0.0))
        return State()

    def batch(self, tick: int, *, seed: int, rows: int | None = None) -> pd.DataFrame:
        """The requests of tick ``tick`` with their true labels; the same for every strategy at one seed."""
        return generate(self.state(tick), rows or self.rows,
                        np.random.default_rng([seed, self.index, tick + 10_000]), fairness=self.fairness)

    def quick(self, *, ticks: int = 40, change: int = 14, rows: int = 400) -> "Scenario":
        """A short version for the tests: fewer ticks, the change earlier."""
        changes = tuple(change + (c - self.changes[0]) for c in self.changes if change + c - self.changes[0] < ticks)
        return replace(self, ticks=ticks, changes=changes, rows=rows, ramp=min(self.ramp, 8),
                       bursts=tuple(b for b in self.bursts if b[0] < ticks))


def generate(state: State, n: int, rng: np.random.Generator, *, fairness: bool = False) -> pd.DataFrame:
    """``n`` requests in ``state`` with their labels (drawn from the true, unrecorded feature values)."""
    group = np.where(rng.random(n) < 0.3, "B", "A")
    x = rng.normal(size=(n, 3)) + np.asarray(state.means)
    if fairness:  # group B applies mostly through partners, A rarely: a proxy the model may learn
        p_partner = np.where(group == "B", 0.7, 0.1)
        u = rng.random(n)
        channel = np.where(u < p_partner, "partner", np.where(rng.random(n) < 0.6, "online", "branch"))
    else:
        channel = rng.choice(CHANNELS, size=n, p=list(state.channel_p))
    sign = 1.0 if state.concept == "A" else -1.0
    f = 2.5 * np.sin(x[:, 0]) + sign * (1.2 * x[:, 1] - 0.8 * x[:, 2])
    label = (rng.random(n) < 1 / (1 + np.exp(-3.0 * f))).astype(int)
    recorded = x.copy()
    is_b = group == "B"
    recorded[is_b, 1] += state.b_offset[0]
    recorded[is_b, 2] += state.b_offset[1]
    return pd.DataFrame({"x0": recorded[:, 0].round(4), "x1": recorded[:, 1].round(4), "x2": recorded[:, 2].round(4),
                         "channel": channel, "group": group, "label": label})


def _bursts(ticks: int, seed: int = 11) -> tuple[tuple[int, int], ...]:
    rng = np.random.default_rng(seed)
    starts = np.arange(15, ticks - 5, 24) + rng.integers(0, 8, size=len(range(15, ticks - 5, 24)))
    return tuple((int(s), int(rng.integers(1, 4))) for s in starts)


SCENARIOS: dict[str, Scenario] = {s.name: s for s in (
    Scenario("stationary", "stationary", "No change at all.", index=1),
    Scenario("noisy", "noisy", "No lasting change: 200-row batches and 1-3 tick bursts of x0/x1 (+1.2 sd).",
             rows=200, bursts=_bursts(240), index=2),
    Scenario("abrupt-covariate", "abrupt", "x0 0 → 2.6 sd, x1 0 → 1 sd and the channel mix, at once at tick 80.",
             changes=(80,), index=3),
    Scenario("gradual-covariate", "gradual", "The same shift, linearly over 48 ticks from tick 80.",
             changes=(80,), ramp=48, index=4),
    Scenario("concept", "concept", "The label function flips x1's and x2's signs at tick 80; the features stay.",
             changes=(80,), index=5),
    Scenario("recurring", "recurring", "The shifted population comes and goes: normal, shifted at 60, normal at "
                                       "120, shifted at 180.", changes=(60, 120, 180), index=6),
    Scenario("fairness", "fairness", "From tick 80 group B's records read x1 +1.5 and x2 -1.5 (a new data "
                                     "source); labels follow the true values.", changes=(80,), index=7,
             fairness=True),
)}
