"""Oscillation: a signal that crosses its threshold on every tick, for 1,000 ticks (issue 3, "Numbers").

One managed model, with a production version and an older one to roll back
to, ticks every 5 minutes of logical time for 1,000 ticks (83 hours). Its
drift share alternates 0.9 / 0.1, so it crosses 0.5 on every tick. Two
policies pull opposite ways: ``retrain`` when the share is above 0.5
(cooldown 6h, at most 3 per 24h) and ``rollback`` when it is not (cooldown
6h). Each tick writes the observation and runs the real
:class:`~mape.plan.planner.Planner` (and, in the symptom variants, the real
:class:`~mape.analyze.stage.Analyzer` first) on a SQLite knowledge base.
Decisions are not executed: a proposed decision counts as acted on for
cooldowns and rate limits, and no run is ever in flight, the most permissive
case for the policies.

Variants:

``raw``
    Both policies read the observation itself.
``exclusions``
    The same, plus ``never_with`` each other within 6h.
``symptom-flapping``
    The policies read the ``data_drift`` symptom (retrain while it is open,
    roll back while it is not); its rule has no hysteresis (enter = exit = 0.5).
``symptom-hysteresis``
    The same with enter 0.5 and exit 0.1, and a signal alternating 0.9 / 0.2:
    its low value lies between the two thresholds, so the symptom opens on
    the first tick and never closes.

Measured and checked for each variant: acting decisions per policy against
the most the policy allows on these ticks (:func:`allowed`, from its cooldown
and rate limit), A→B→A flip-flops (retrain, rollback, retrain of one model
within the first action's cooldown: must be 0), A→B reversals (informational)
and planning time per tick. Results go to ``benchmarks/results/oscillation.json``.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from benchmarks.machine import describe, write_results
from knowledge import queries, registry
from knowledge.database import create_engine_for, session_scope
from knowledge.migrate import upgrade
from knowledge.tables import ManagedModel, Observation
from mape.analyze.stage import Analyzer
from mape.config import SymptomRule
from mape.errors import ConditionError
from mape.plan.context import build_context
from mape.plan.loader import LoadedPolicy, load_policy_text
from mape.plan.planner import Planner
from mape.plan.policy import PolicySpec

START = datetime(2026, 1, 5, tzinfo=timezone.utc)
INTERVAL = timedelta(minutes=5)
METRIC = "drift.share_drifted"
MODEL = "oscillating"

RAW_WHEN = {"retrain": f"has({METRIC}) && {METRIC} > 0.5",
            "rollback": f"has({METRIC}) && {METRIC} <= 0.5 && model.can_roll_back"}
SYMPTOM_WHEN = {"retrain": "'data_drift' in symptoms",
                "rollback": "!('data_drift' in symptoms) && model.can_roll_back"}


def policy_text(action: str, when: str, *, exclusions: bool = False) -> str:
    """``retrain``: cooldown 6h, at most 3 per 24h; ``rollback``: cooldown 6h. Optionally never with each other."""
    other = "rollback" if action == "retrain" else "retrain"
    lines = [
        "apiVersion: mape/v1", "kind: Policy", f"metadata: {{name: {action}-on-signal}}", "spec:",
        f"  when: \"{when}\"", f"  action: {{type: {action}}}", "  cooldown: 6h",
    ]
    if action == "retrain":
        lines.append("  rate_limit: {max: 3, per: 24h}")
    if exclusions:
        lines.append(f"  never_with: [{{action: {other}, within: 6h}}]")
    return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class Variant:
    name: str
    when: dict[str, str]
    values: Callable[[int], float]
    rule: SymptomRule | None = None
    exclusions: bool = False

    def policies(self) -> list[LoadedPolicy]:
        return [load_policy_text(policy_text(action, when, exclusions=self.exclusions), f"{action}.yaml",
                                 known_actions={"retrain", "rollback"})
                for action, when in self.when.items()]


def _alternating(high: float, low: float) -> Callable[[int], float]:
    return lambda k: high if k % 2 == 0 else low


VARIANTS = (
    Variant("raw", RAW_WHEN, _alternating(0.9, 0.1)),
    Variant("exclusions", RAW_WHEN, _alternating(0.9, 0.1), exclusions=True),
    Variant("symptom-flapping", SYMPTOM_WHEN, _alternating(0.9, 0.1),
            rule=SymptomRule(symptom="data_drift", metric=METRIC, enter=0.5, exit=0.5, for_ticks=1, clear_ticks=1)),
    Variant("symptom-hysteresis", SYMPTOM_WHEN, _alternating(0.9, 0.2),
            rule=SymptomRule(symptom="data_drift", metric=METRIC, enter=0.5, exit=0.1, for_ticks=1, clear_ticks=1)),
)


def allowed(spec: PolicySpec, times: Sequence[datetime]) -> int:
    """The most acting decisions a policy's cooldown and rate limit allow at ``times`` (when its condition holds).

    Greedy, earliest first, which is optimal for these two rules: a decision at
    ``t`` is allowed when the last one is at least ``cooldown`` before ``t``,
    and fewer than ``rate_limit.max`` lie in ``(t - per, t]``.

    >>> spec = PolicySpec.model_validate({"when": "true", "action": {"type": "retrain"}, "cooldown": "6h",
    ...                                   "rate_limit": {"max": 3, "per": "24h"}})
    >>> allowed(spec, [START + k * timedelta(hours=1) for k in range(49)])  # 0, 6, 12, 24, 30, 36, 48h
    7
    """
    taken: list[datetime] = []
    for t in times:
        if taken and t - taken[-1] < spec.cooldown:
            continue
        if spec.rate_limit is not None and \
                sum(1 for d in taken if d > t - spec.rate_limit.per) >= spec.rate_limit.max:
            continue
        taken.append(t)
    return len(taken)


def flip_flops(acted: Sequence[tuple[datetime, str]], cooldown: dict[str, timedelta]) -> tuple[int, int]:
    """(A→B→A within A's cooldown, A→B within A's cooldown) over one model's acting decisions, in time order."""
    aba = sum(1 for (t1, a), (_, b), (t3, c) in zip(acted, acted[1:], acted[2:])
              if a == c != b and t3 - t1 < cooldown[a])
    ab = sum(1 for (t1, a), (t2, b) in zip(acted, acted[1:]) if a != b and t2 - t1 < cooldown[a])
    return aba, ab


def _seed(engine: Any) -> int:
    with session_scope(engine) as session:
        model = registry.upsert_model(session, name=MODEL, labels={"team": "risk"})
        for version in (1, 2):
            row = registry.register_version(session, model_id=model.id, artifact_uri=f"file:///v{version}",
                                            metrics={"accuracy": 0.9})
            registry.promote(session, row, actor="bench", at=START - timedelta(days=3 - version))
        assert model.id is not None
        return model.id


def simulate(variant: Variant, ticks: int, directory: Path) -> dict[str, Any]:
    """Tick ``ticks`` times on a fresh knowledge base under ``directory``; the counts, bounds and timings."""
    url = f"sqlite:///{directory / f'{variant.name}.db'}"
    upgrade(url)
    engine = create_engine_for(url)
    model_id = _seed(engine)
    policies = variant.policies()
    planner = Planner(policies, actor="bench", max_age=INTERVAL / 2)
    analyzer = Analyzer([variant.rule]) if variant.rule is not None else None
    acted: list[tuple[datetime, str]] = []
    by_policy = {p.name: 0 for p in policies}
    holds: dict[str, list[datetime]] = {p.name: [] for p in policies}
    plan_s: list[float] = []
    opened = closed = 0
    for k in range(ticks):
        at = START + k * INTERVAL
        with session_scope(engine) as session:
            queries.add_observations(session, [Observation(time=at, model_id=model_id, sensor="bench", metric=METRIC,
                                                           value=variant.values(k))])
            if analyzer is not None:
                analysis = analyzer.run(session, {MODEL: model_id}, at).model(MODEL)
                opened += len(analysis.opened)
                closed += len(analysis.closed)
            model = session.get(ManagedModel, model_id)
            context = build_context(session, model, at, max_age=planner.max_age)
            for policy in policies:  # when each condition holds, read apart from the planner's own records
                try:
                    if policy.when.evaluate(context):
                        holds[policy.name].append(at)
                except ConditionError:
                    pass  # a missing signal: the condition does not hold
            began = time.perf_counter()
            report = planner.plan(session, [model], at)
            plan_s.append(time.perf_counter() - began)
            for decision in report.acting():
                by_policy[decision.policy_name] += 1
                acted.append((at, decision.action))
    engine.dispose()
    specs = {p.name: p.policy.spec for p in policies}
    bounds = {name: allowed(spec, holds[name]) for name, spec in specs.items()}
    aba, ab = flip_flops(acted, {spec.action.type: spec.cooldown for spec in specs.values()})
    ordered = sorted(plan_s)
    result: dict[str, Any] = {
        "ticks": ticks,
        "acting_decisions": by_policy,
        "bound": bounds,
        "condition_held_ticks": {name: len(times) for name, times in holds.items()},
        "a_b_a_within_cooldown": aba,
        "a_b_reversals_within_cooldown": ab,
        "plan_per_tick_median_ms": round(statistics.median(plan_s) * 1000, 2),
        "plan_per_tick_p95_ms": round(ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))] * 1000, 2),
        "within_bound": all(by_policy[name] <= bounds[name] for name in bounds),
        "no_a_b_a": aba == 0,
    }
    if variant.rule is not None:
        result["symptom"] = {"enter": variant.rule.enter, "exit": variant.rule.exit, "opened": opened,
                             "closed": closed}
    return result


def measure(ticks: int = 1000) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        variants = {v.name: simulate(v, ticks, Path(tmp)) for v in VARIANTS}
    return {
        "machine": describe(), "ticks": ticks, "interval": "5m", "signal": f"{METRIC} alternating 0.9 / 0.1 "
        "(0.9 / 0.2 in symptom-hysteresis)", "policies": {"retrain": "cooldown 6h, rate_limit 3 per 24h",
                                                          "rollback": "cooldown 6h"},
        "variants": variants,
        "ok": all(v["within_bound"] and v["no_a_b_a"] for v in variants.values()),
    }


def main() -> None:
    results = measure()
    write_results("oscillation", results)
    if not results["ok"]:
        sys.exit("oscillation: a policy acted more often than its cooldown and rate limit allow, or flip-flopped")


if __name__ == "__main__":
    main()
