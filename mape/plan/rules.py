"""The suppression rules: what becomes of a firing policy's decision, in the documented order.

What it does: :func:`decide` returns the status and reason of one decision
from the policy, the model, the tick's winner so far and the pass's
:class:`~mape.plan.ledger.PlanLedger`; it reads no database, so the live
planner and ``mape policy simulate`` apply exactly the same rules. The order:

1. the policy or the model is paused (``mape pause``) → ``suppressed`` (paused);
   a failed or inconclusive verification of this policy's last change on this
   model blocks it until a new symptom opens or a person lifts the block →
   ``suppressed`` (blocked);
2. ``mode: dry-run`` → ``dry_run`` (recorded, never acted on, blocks nothing);
3. an action run of this model is in flight, or a canary of it runs → ``suppressed`` (busy);
4. the last acting decision of the same action for this model lies within the
   policy's ``cooldown`` → ``suppressed`` (cooldown); so does a decision of
   this policy for this model that a person rejected, counted from the answer
   (a "no" is not asked again at the next tick);
5. an acting decision of an action the policy is ``never_with`` lies within
   that exclusion's window (or this tick) → ``suppressed`` (excluded);
6. the policy already made ``rate_limit.max`` acting decisions for this model
   within ``rate_limit.per`` → ``suppressed`` (rate limit);
7. a higher-ranked policy already acts on this model in this tick →
   ``suppressed`` (outranked, naming the winner);
8. ``approval: required`` → ``awaiting_approval``;
9. acting would take the number of models acted on automatically within the
   blast radius's period past its limit → ``awaiting_approval`` (a person must
   decide);
10. otherwise ``proposed``.

Who calls it: :class:`mape.plan.planner.Planner`; the simulator.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta

from knowledge.tables import Decision, DecisionStatus, ManagedModel, PauseScope
from mape._util.timeutil import ensure_utc, format_duration
from mape.config import BlastRadius
from mape.plan.ledger import Draft, PlanLedger
from mape.plan.loader import LoadedPolicy
from mape.plan.verification import block_reason

__all__ = ["BLAST_RADIUS_REASON", "Ruling", "blast_limit", "decide", "lookback"]

#: The reason of a decision held for a person by the blast radius starts with this.
BLAST_RADIUS_REASON = "blast radius"


@dataclass(frozen=True)
class Ruling:
    status: str
    reason: str = ""


def blast_limit(blast: BlastRadius, fleet_size: int) -> int:
    """How many models may be acted on automatically within ``blast.per`` (at least one).

    >>> from mape.config import BlastRadius
    >>> blast_limit(BlastRadius(max_models=10, max_percent=5), 1000), blast_limit(BlastRadius(max_percent=5), 10)
    (10, 1)
    """
    limits = []
    if blast.max_models is not None:
        limits.append(blast.max_models)
    if blast.max_percent is not None:
        limits.append(max(1, math.floor(blast.max_percent / 100 * fleet_size)))
    return min(limits) if limits else fleet_size


def lookback(policies: list[LoadedPolicy], blast: BlastRadius | None) -> timedelta:
    """How far back the rules look: the longest cooldown, exclusion window, rate-limit or blast-radius period."""
    spans = [timedelta(0)]
    for policy in policies:
        spec = policy.policy.spec
        spans.append(spec.cooldown)
        spans.extend(rule.within for rule in spec.never_with)
        if spec.rate_limit is not None:
            spans.append(spec.rate_limit.per)
    if blast is not None:
        spans.append(blast.per)
    return max(spans)


def decide(policy: LoadedPolicy, model: ManagedModel, at: datetime, ledger: PlanLedger,
           winner: Decision | Draft | None,
           *, blast: BlastRadius | None = None, fleet_size: int = 0, action: str | None = None) -> Ruling:
    """The status and reason of ``policy``'s decision for ``model`` at ``at`` (see the module's order).

    ``action`` is the action type the decision takes when the policy chose one
    of its ``alternatives`` (default ``spec.action.type``): the cooldown is that action's.
    """
    spec = policy.policy.spec
    action_type = action or spec.action.type
    assert model.id is not None
    paused = ledger.pauses.get((PauseScope.policy.value, policy.name)) or \
        ledger.pauses.get((PauseScope.model.value, model.name))
    if paused is not None:
        return Ruling(DecisionStatus.suppressed.value,
                      f"paused: {paused.scope} {paused.name} paused by {paused.paused_by} at "
                      f"{ensure_utc(paused.paused_at).isoformat()}: {paused.reason}")
    blocked = ledger.blocks.get((model.id, policy.name))
    if blocked is not None:
        return Ruling(DecisionStatus.suppressed.value, block_reason(blocked))
    if spec.mode == "dry-run":
        return Ruling(DecisionStatus.dry_run.value, "dry-run: recorded, not acted on")
    busy = ledger.busy.get(model.id)
    if busy:
        runs = ", ".join(str(run) for run in busy)
        return Ruling(DecisionStatus.suppressed.value, f"busy: {runs} in flight for {model}")
    if spec.cooldown > timedelta(0):
        last = ledger.last(model.id, action_type, before=at)
        if last is not None and at - last.created_at < spec.cooldown:
            return Ruling(DecisionStatus.suppressed.value,
                          f"cooldown: last {action_type} decision {last.id} at {last.created_at.isoformat()}, "
                          f"cooldown {format_duration(spec.cooldown)}")
        refused = ledger.rejected.get((model.id, policy.name))
        if refused is not None and refused.at <= at and at - refused.at < spec.cooldown:
            return Ruling(DecisionStatus.suppressed.value,
                          f"cooldown: decision {refused.decision_id} was rejected by {refused.by} at "
                          f"{refused.at.isoformat()}; asked again after the cooldown "
                          f"{format_duration(spec.cooldown)}")
    for rule in spec.never_with:
        other = ledger.last(model.id, rule.action, before=at + timedelta(microseconds=1))
        if other is not None and (other.tick_at == at or at - other.created_at < rule.within):
            when = "in this tick" if other.tick_at == at else f"at {other.created_at.isoformat()}"
            which = f"decision {other.id}" if other.id is not None else "decision"  # a draft of this pass: no id yet
            return Ruling(DecisionStatus.suppressed.value,
                          f"excluded: never with {rule.action} within {format_duration(rule.within)}; "
                          f"{rule.action} {which} {when}")
    if spec.rate_limit is not None:
        limit = spec.rate_limit
        if ledger.count(model.id, policy.name, since=at - limit.per, until=at) >= limit.max:
            return Ruling(DecisionStatus.suppressed.value,
                          f"rate limit: {limit.max} {action_type} decisions in the last "
                          f"{format_duration(limit.per)}")
    if winner is not None:
        return Ruling(DecisionStatus.suppressed.value,
                      f"outranked: policy {winner.policy_name} ({winner.action}, decision {winner.id}) "
                      f"acts on {model} in this tick")
    if spec.approval == "required":
        return Ruling(DecisionStatus.awaiting_approval.value, "awaiting approval")
    if blast is not None:
        acted = ledger.models_acted_on(since=at - blast.per, until=at)
        limit_n = blast_limit(blast, fleet_size)
        if model.id not in acted and len(acted) >= limit_n:
            return Ruling(DecisionStatus.awaiting_approval.value,
                          f"{BLAST_RADIUS_REASON}: {len(acted)} of {fleet_size} models acted on in the last "
                          f"{format_duration(blast.per)} (limit {limit_n}); a person must approve")
    return Ruling(DecisionStatus.proposed.value)
