"""The figures of the adaptation-quality benchmark, computed from a :class:`~benchmarks.adaptation.trace.Trace`.

Who calls it: :func:`benchmarks.adaptation.main` (via :func:`summarize`) and
the tests, which check each figure on cases whose answer is known.

Definitions (ticks are simulated hours; tick ``k``'s accuracy is that of the
model that served batch ``k``, scored before batch ``k``'s labels were used
for anything: prequential):

accuracy area
    The mean of the per-tick accuracies: the area under the accuracy curve
    divided by the stream's length (1.0 is a perfect model throughout).
worst window
    The lowest per-tick accuracy.
fairness gap
    Per tick, the demographic parity difference of the served predictions
    between groups A and B; its mean and its maximum.
energy
    codecarbon's reading of every training (and rollback) run, metered the same
    way for every strategy, and an estimate from their CPU time at
    :data:`WATTS_PER_BUSY_CORE`; emissions of both at codecarbon's world
    average intensity.
false retrains per 1,000 ticks
    On streams without a lasting change (stationary, noisy), every retrain.
detection delay
    Per change, ticks from the onset to the strategy's first acting decision
    at or after it (before the next change); none if it never decided.
adaptation latency
    Per change, the chain onset → first symptom opened → decision → action
    → effect observed: the first tick served by the new model whose accuracy
    is within :data:`TOLERANCE` of the pre-change level (the mean accuracy of
    the :data:`PRE_TICKS` ticks before the onset). Each step in ticks from
    the onset.
oscillations
    A→B→A triples of consecutive actions (retrain, rollback, retrain; or
    rollback, retrain, rollback) whose first and third lie within
    :data:`OSCILLATION_WINDOW` ticks.
settling time
    Ticks from the onset until the 3-tick rolling accuracy enters the band
    ``pre-change level - TOLERANCE`` and stays there until the next change.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from typing import Any

import numpy as np

from benchmarks.adaptation.scenarios import Scenario
from benchmarks.adaptation.trace import Trace
from mape.data.energy import country_intensity

TOLERANCE = 0.03
"""Accuracy within 3 points of the pre-change level counts as recovered."""
PRE_TICKS = 24
OSCILLATION_WINDOW = 24
ROLLING = 3
WATTS_PER_BUSY_CORE = 15.0
"""The stated power of one busy core, for the CPU-time energy estimate beside codecarbon's reading (codecarbon
often reads 0 for a sub-second training run: its process-mode estimate needs a power sample inside the run)."""


def accuracy_area(accuracy: Sequence[float]) -> float:
    """Mean per-tick accuracy (area under the accuracy curve over the stream's length).

    >>> accuracy_area([0.9] * 10)
    0.9
    """
    return float(np.mean(accuracy)) if len(accuracy) else float("nan")


def worst_window(accuracy: Sequence[float]) -> float:
    """The lowest per-tick accuracy.

    >>> worst_window([0.9, 0.7, 0.8])
    0.7
    """
    return float(min(accuracy))


def oscillations(events: Sequence[tuple[int, str]], window: int = OSCILLATION_WINDOW) -> int:
    """A→B→A triples of consecutive ``(tick, kind)`` events whose first and last lie within ``window`` ticks.

    >>> oscillations([(10, "retrain"), (14, "rollback"), (20, "retrain")])
    1
    >>> oscillations([(10, "retrain"), (14, "rollback"), (40, "retrain")])
    0
    >>> oscillations([(10, "retrain"), (20, "retrain"), (30, "retrain")])
    0
    """
    ordered = sorted(events)
    return sum(1 for (t1, a), (_, b), (t3, c) in zip(ordered, ordered[1:], ordered[2:])
               if a == c != b and t3 - t1 <= window)


def pre_change_level(accuracy: Sequence[float], onset: int, ticks: int = PRE_TICKS) -> float:
    """Mean accuracy of the ``ticks`` ticks before ``onset`` (tick ``k`` is ``accuracy[k - 1]``)."""
    window = accuracy[max(0, onset - 1 - ticks):onset - 1]
    return float(np.mean(window)) if len(window) else float(np.mean(accuracy))


def settling_time(accuracy: Sequence[float], onset: int, end: int, level: float,
                  tolerance: float = TOLERANCE) -> int | None:
    """Ticks from ``onset`` until the rolling accuracy is within ``tolerance`` of ``level`` up to ``end`` (exclusive).

    None when it does not settle before ``end``. A stream never pushed out of the band settles at 0.

    >>> settling_time([0.9] * 5 + [0.6] * 3 + [0.9] * 10, onset=6, end=19, level=0.9)
    5
    >>> settling_time([0.9] * 20, onset=6, end=21, level=0.9)
    0
    """
    values = np.asarray(accuracy[onset - 1:end - 1], dtype=float)
    if values.size == 0:
        return None
    rolling = np.array([values[max(0, i - ROLLING + 1):i + 1].mean() for i in range(values.size)])
    inside = rolling >= level - tolerance
    if inside.all():
        return 0
    last_out = int(np.flatnonzero(~inside)[-1])
    return last_out + 1 if last_out + 1 < values.size else None


def _first(ticks: Sequence[int], start: int, end: int) -> int | None:
    found = [t for t in ticks if start <= t < end]
    return min(found) if found else None


def episode_figures(trace: Trace, onset: int, end: int) -> dict[str, Any]:
    """Detection delay, the latency chain and the settling time of one change ``[onset, end)``."""
    level = pre_change_level(trace.accuracy, onset)
    symptom = _first([t for t, _ in trace.symptoms], onset, end)
    decision = _first([t for t, _ in trace.decisions], onset, end)
    action = _first([a.tick for a in trace.actions if a.outcome != "failed"],
                    decision if decision is not None else onset, end)
    effect = None
    if action is not None:
        effect = next((k for k in range(action + 1, min(end, len(trace.accuracy) + 1))
                       if trace.accuracy[k - 1] >= level - TOLERANCE), None)

    def since(tick: int | None) -> int | None:
        return None if tick is None else tick - onset

    return {"onset": onset, "pre_change_accuracy": round(level, 4), "detection_delay": since(decision),
            "latency": {"symptom": since(symptom), "decision": since(decision), "action": since(action),
                        "effect": since(effect)},
            "settling_time": settling_time(trace.accuracy, onset, end, level)}


def summarize(trace: Trace, scenario: Scenario) -> dict[str, Any]:
    """Every figure of one trace (one strategy, one stream, one seed)."""
    retrains = len(trace.retrains)
    intensity = country_intensity(None).g_per_kwh
    actions = [(a.tick, a.kind) for a in trace.actions if a.outcome != "failed"]
    result: dict[str, Any] = {
        "accuracy_area": round(accuracy_area(trace.accuracy), 4),
        "worst_window": round(worst_window(trace.accuracy), 4),
        "fairness_gap_mean": round(float(np.mean(trace.gap)), 4),
        "fairness_gap_max": round(float(np.max(trace.gap)), 4),
        "retrains": retrains,
        "promoted_or_deployed": sum(1 for a in trace.retrains if a.outcome in ("deployed", "promoted")),
        "rollbacks": sum(1 for a in trace.actions if a.kind == "rollback" and a.outcome != "failed"),
        "adaptations": len(actions),
        "oscillations": oscillations(actions),
        "energy_kwh": None if trace.energy_kwh is None else round(trace.energy_kwh, 9),
        "emissions_g": None if trace.energy_kwh is None else round(trace.energy_kwh * intensity, 6),
        "train_cpu_s": round(trace.train_cpu_s, 3),
        "energy_cpu_estimate_kwh": round(trace.train_cpu_s * WATTS_PER_BUSY_CORE / 3.6e6, 12),
        "emissions_cpu_estimate_g": round(trace.train_cpu_s * WATTS_PER_BUSY_CORE / 3.6e6 * intensity, 9),
        "episodes": [episode_figures(trace, onset, end) for onset, end in scenario.episodes()],
    }
    if scenario.false_alarm_stream:
        result["false_retrains_per_1000_ticks"] = round(retrains * 1000 / scenario.ticks, 2)
    return result


def median_of(summaries: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The per-seed summaries folded into medians (numbers) and lists (per-episode figures), key by key."""
    if not summaries:
        return {}
    folded: dict[str, Any] = {}
    for key, value in summaries[0].items():
        values = [s.get(key) for s in summaries]
        if key == "episodes":
            folded[key] = [_median_episode([s["episodes"][i] for s in summaries]) for i in range(len(value))]
        elif isinstance(value, (int, float)) or value is None:
            numbers = [v for v in values if isinstance(v, (int, float))]
            folded[key] = round(float(statistics.median(numbers)), 6) if numbers else None
        else:
            folded[key] = values
    return folded


def _median_episode(episodes: Sequence[dict[str, Any]]) -> dict[str, Any]:
    def med(values: Sequence[int | float | None]) -> float | None:
        numbers = [v for v in values if v is not None]
        return float(statistics.median(numbers)) if len(numbers) * 2 > len(values) else None  # most seeds saw it

    return {"onset": episodes[0]["onset"],
            "pre_change_accuracy": med([e["pre_change_accuracy"] for e in episodes]),
            "detection_delay": med([e["detection_delay"] for e in episodes]),
            "latency": {k: med([e["latency"][k] for e in episodes]) for k in episodes[0]["latency"]},
            "settling_time": med([e["settling_time"] for e in episodes])}
