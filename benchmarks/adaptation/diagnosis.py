"""Why mape missed a goal on a scenario, in sentences built from its own record.

Who calls it: :func:`benchmarks.adaptation.measure`, for the report. It reads
the medians of one scenario and the first seed's mape trace (its symptoms,
decisions and action runs) and names, for each goal not met, what the record
shows: no symptom the shipped policy needs, a late decision, extra or
rejected retrains, rollbacks.
"""

from __future__ import annotations

from typing import Any

from benchmarks.adaptation.trace import Trace


def diagnose(entry: dict[str, Any], trace: Trace) -> list[str]:
    """Sentences for the goals ``entry['goals']`` says are not met (empty when all are)."""
    s, g = entry["strategies"], entry["goals"]
    mape, oracle = s["mape"], s["oracle"]
    notes: list[str] = []
    for episode, oracle_episode in zip(mape["episodes"], oracle["episodes"]):
        onset = episode["onset"]
        end = next((c for c in entry["changes"] if c > onset), entry["ticks"] + 1)
        kinds = sorted({kind for tick, kind in trace.symptoms if onset <= tick < end})
        if episode["detection_delay"] is None:
            if not {"data_drift", "performance_drop"} & set(kinds):
                notes.append(f"change at {onset}: no decision; the retrain policies need an open data_drift or "
                             f"performance_drop symptom and none opened (symptoms seen: {', '.join(kinds) or 'none'}), "
                             "so mape did not retrain.")
            else:
                notes.append(f"change at {onset}: {' and '.join(k for k in kinds if k in ('data_drift', 'performance_drop'))} "
                             "opened but no policy decided (the accuracy drop or the symptom's age did not reach the "
                             "policies' thresholds, or a cooldown or verdict blocked it).")
        elif (episode["latency"]["action"] or 0) > (oracle_episode["latency"]["action"] or 0):
            notes.append(f"change at {onset}: mape acted {episode['latency']['action']:.0f} ticks after the onset, "
                         f"the oracle {oracle_episode['latency']['action']:.0f}.")
    runs = [r for r in trace.engine.get("runs", []) if r["state"] == "succeeded"]
    rejected = [r["tick"] for r in runs if r["action"] == "retrain" and not r["result"].get("promoted")]
    rollbacks = [(r["tick"], r["policy"]) for r in runs if r["action"] == "rollback"]
    if rejected:
        notes.append(f"the promotion gate rejected the candidates of ticks {rejected} (they still cost a training).")
    if rollbacks:
        notes.append("rollbacks: " + ", ".join(f"tick {t} by {p}" for t, p in rollbacks) + ".")
    acted = [(r["tick"], r["action"], r["policy"]) for r in runs]
    cycles = [(a, b, c) for a, b, c in zip(acted, acted[1:], acted[2:]) if a[1] == c[1] != b[1] and c[0] - a[0] <= 24]
    if cycles:
        (t1, k1, p1), (t2, k2, p2), (t3, k3, p3) = cycles[0]
        notes.append(f"{len(cycles)} A→B→A cycles within 24 ticks, the first: tick {t1} {k1} ({p1}), tick {t2} {k2} "
                     f"({p2}), tick {t3} {k3} ({p3}).")
    if g.get("false_retrains") is False or (g.get("retrains_vs_oracle") is False and entry["changes"]):
        retrains = [(r["tick"], r["policy"]) for r in runs if r["action"] == "retrain"]
        notes.append("retrains: " + ", ".join(f"tick {t} by {p}" for t, p in retrains) + ".")
    if g.get("accuracy_vs_oracle") is False and not notes:
        notes.append(f"accuracy area {mape['accuracy_area']:.4f} against the oracle's {oracle['accuracy_area']:.4f}.")
    return notes
