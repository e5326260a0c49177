"""The baseline strategies, and the training code every strategy shares.

Who calls it: :func:`benchmarks.adaptation.main` runs :func:`run_baseline`
for ``none``, ``periodic`` and ``oracle``; :mod:`benchmarks.adaptation.run_mape`
uses :func:`initial_model` so mape starts from the same first version.

All strategies train the same model (``examples.credit.model:train``, the
credit example's scaling + one-hot + logistic regression, called through
mape's own :func:`~mape.execute.training.run_entrypoint`) on the same window:
a retrain at tick ``t`` reads batches ``t-3 .. t`` (``retrain-on-drift``'s
``window: 4h``), holds the newest one out (the promotion gate's
``evaluation_window: 1h``) and trains on ``t-3 .. t-1``. Only *when* they
retrain differs, and that the baselines deploy every candidate while mape's
gate may reject one. Each baseline training run is metered the way the
engine meters an action run (:func:`mape.data.energy.measure_energy`,
codecarbon offline, process mode).

Strategies:

``none``
    Version 1 serves throughout.
``periodic``
    Retrain every ``K`` ticks (24: the daily cron habit).
``oracle``
    Knows the true change points: decides at each change (detection delay 0)
    and retrains at the first tick whose training window holds only the new
    regime (:meth:`~benchmarks.adaptation.scenarios.Scenario.oracle_ticks`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

import pandas as pd

from benchmarks.adaptation.scenarios import CATEGORICAL, FEATURES, NUMERIC, TRAIN_WINDOW, Scenario
from benchmarks.adaptation.trace import Action, Trace, score
from mape.data.energy import measure_energy
from mape.execute.training import TrainingRequest, run_entrypoint

ENTRYPOINT = "examples.credit.model:train"
START = datetime(2026, 3, 2, tzinfo=timezone.utc)
HISTORY = 24
"""Ticks of history before tick 1; version 1 trains on the first 20 and is scored on the last 4."""
PERIOD = 24
"""``periodic``'s K: retrain every 24 ticks (simulated hours)."""
STRATEGIES = ("none", "periodic", "oracle")


def at(tick: int) -> datetime:
    """The logical time of tick ``tick``; batch ``tick`` holds requests of the hour before it."""
    return START + timedelta(hours=tick)


@dataclass(frozen=True)
class Trained:
    """A fitted estimator, its training accuracy, and what the training cost."""

    estimator: Any
    kwh: float | None
    cpu_s: float


def train(frames: list[pd.DataFrame], *, model_name: str = "adaptive") -> Trained:
    """Fit the shared model on ``frames`` (labelled batches), metered like an engine action run."""
    data = pd.concat(frames, ignore_index=True)
    request = TrainingRequest(model_name=model_name, data=data, features=FEATURES, numeric=NUMERIC,
                              categorical=CATEGORICAL, window_start=START, window_end=START)
    began = time.process_time()
    with measure_energy() as energy:
        trained = run_entrypoint(ENTRYPOINT, request)
    return Trained(trained.estimator, energy.kwh, time.process_time() - began)


@dataclass(frozen=True)
class Initial:
    """Version 1: trained on the history, scored on its held-out end (the baseline accuracy)."""

    estimator: Any
    accuracy: float
    history: dict[int, pd.DataFrame]


def initial_model(scenario: Scenario, seed: int) -> Initial:
    """Version 1 of every strategy: trained on batches ``-23 .. -4``, scored on ``-3 .. 0``."""
    history = {k: scenario.batch(k, seed=seed) for k in range(1 - HISTORY, 1)}
    trained = train([history[k] for k in range(1 - HISTORY, -3)])
    holdout = pd.concat([history[k] for k in range(-3, 1)], ignore_index=True)
    accuracy = float((trained.estimator.predict(holdout[FEATURES]) == holdout["label"]).mean())
    return Initial(trained.estimator, accuracy, history)


def schedule(strategy: str, scenario: Scenario) -> tuple[Callable[[int], bool], dict[int, int]]:
    """(whether to retrain at a tick, the decision tick behind each retrain tick) of a baseline."""
    if strategy == "none":
        return (lambda t: False), {}
    if strategy == "periodic":
        return (lambda t: t % PERIOD == 0), {}
    if strategy == "oracle":
        ticks = scenario.oracle_ticks()
        decided = dict(zip(ticks, _oracle_decisions(scenario)))
        return (lambda t: t in decided), decided
    raise ValueError(f"The 'strategy' parameter of run_baseline must be one of {', '.join(STRATEGIES)}. "
                     f"Got {strategy!r} instead.")


def _oracle_decisions(scenario: Scenario) -> list[int]:
    if scenario.kind == "gradual":  # it knows the ramp: both retrains are decided at its start
        return [scenario.changes[0]] * 2
    return list(scenario.changes)


def run_baseline(strategy: str, scenario: Scenario, seed: int, initial: Initial | None = None) -> Trace:
    """Serve ``scenario`` at ``seed`` with ``strategy``; the trace of what it served and did."""
    retrain_now, decided = schedule(strategy, scenario)
    initial = initial or initial_model(scenario, seed)
    trace = Trace(strategy=strategy, scenario=scenario.name, seed=seed)
    batches = dict(initial.history)
    estimator, version = initial.estimator, 1
    for tick in range(1, scenario.ticks + 1):
        batch = scenario.batch(tick, seed=seed)
        batches[tick] = batch
        trace.record(*score(estimator.predict(batch[FEATURES]), batch), version)  # scored before its labels are used
        if tick in decided.values():
            trace.decisions.append((tick, "retrain"))
        if retrain_now(tick):
            trained = train([batches[k] for k in range(tick - TRAIN_WINDOW + 1, tick)])
            estimator, version = trained.estimator, version + 1
            trace.actions.append(Action(tick, "retrain", "deployed", decided.get(tick, tick)))
            if strategy == "periodic":
                trace.decisions.append((tick, "retrain"))
            trace.add_energy(trained.kwh)
            trace.train_cpu_s += trained.cpu_s
    return trace
