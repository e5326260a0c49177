"""What the planner must know about the fleet's recent decisions, read once per planning pass.

What it does: :func:`read_ledger` reads, in a handful of fleet-wide queries,
everything the suppression rules (:mod:`mape.plan.rules`) consult: active
pauses, action runs in flight and running canaries, the acting decisions of the look-back window
(cooldowns, ``never_with``, rate limits, the blast radius), the decisions
already stored for this tick (a repeated tick, the tick's winner) and the
``for``/``keep_firing_for`` state of policies. :class:`PlanLedger` then answers
every rule's question in memory, and :meth:`PlanLedger.record` adds the
decisions the pass makes, so a later model of the same pass sees them (the
blast radius counts models fleet-wide). ``mape policy simulate`` keeps one
ledger over a whole replay, without a database.

Who calls it: :class:`mape.plan.planner.Planner`, once per pass; the simulator.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, fields
from datetime import datetime, timedelta
from typing import Any

from sqlmodel import Session

from knowledge import queries
from knowledge.approvals import recent_rejections
from knowledge.canaries import running_canaries
from knowledge.tables import ActionRun, Canary, Decision, DecisionStatus, Pause, PolicyState
from mape._util.timeutil import ensure_utc

__all__ = ["ACTING_STATUSES", "AUTOMATIC_STATUSES", "Acted", "CanaryInFlight", "Draft", "PlanLedger", "Rejection",
           "read_ledger"]

#: Decisions that act or may act: they start cooldowns and count toward rate limits.
ACTING_STATUSES = (DecisionStatus.proposed.value, DecisionStatus.awaiting_approval.value,
                   DecisionStatus.approved.value)
#: Decisions that act without (further) asking a person: they count toward the blast radius.
AUTOMATIC_STATUSES = (DecisionStatus.proposed.value, DecisionStatus.approved.value)


@dataclass(frozen=True)
class Acted:
    """One acting decision, as the rules need it."""

    id: int | None
    model_id: int
    policy: str
    action: str
    status: str
    created_at: datetime
    tick_at: datetime | None
    follow_up: bool = False  # a rollback written by verification, not by the policy's own condition

    @classmethod
    def of(cls, decision: Decision | Draft) -> Acted:
        return cls(id=decision.id, model_id=decision.model_id, policy=decision.policy_name, action=decision.action,
                   status=decision.status, created_at=ensure_utc(decision.created_at),
                   tick_at=ensure_utc(decision.tick_at) if decision.tick_at is not None else None,
                   follow_up=getattr(decision, "follows_run_id", None) is not None)


@dataclass(frozen=True)
class Rejection:
    """A person's "no" to a policy's decision for a model: who, when (the answer's time), and which decision."""

    decision_id: int | None
    by: str
    at: datetime


@dataclass
class Draft:
    """A decision a pass has made but not stored yet; the rules treat it like a stored one."""

    created_at: datetime
    tick_at: datetime | None
    model_id: int
    policy_name: str
    policy_sha256: str | None
    action: str
    params: dict[str, Any]
    priority: int
    actor: str
    status: str
    reason: str
    dedup_key: str
    evidence: dict[str, Any]
    expires_at: datetime | None = None
    not_before: datetime | None = None
    deadline: datetime | None = None
    id: int | None = None

    def values(self) -> dict[str, Any]:
        """The column values to insert (shallow: the evidence is not copied)."""
        return {name: getattr(self, name) for name in _DRAFT_COLUMNS}


#: The columns a draft fills, in field order (``id`` comes from the insert).
_DRAFT_COLUMNS = tuple(f.name for f in fields(Draft) if f.name != "id")


@dataclass(frozen=True)
class CanaryInFlight:
    """A running canary, which keeps its model busy like an action in flight (the busy rule names it).

    >>> from types import SimpleNamespace as Row
    >>> print(CanaryInFlight(Row(id=2, step=0, steps=[{}, {}], share=0.1), Row(id=7, action="retrain")))
    canary 2 of retrain run 7 (step 1 of 2, 10% of the replicas)
    """

    canary: Canary
    run: ActionRun

    @property
    def id(self) -> int | None:
        return self.run.id

    def __str__(self) -> str:
        return (f"canary {self.canary.id} of {self.run.action} run {self.run.id} (step {self.canary.step + 1} of "
                f"{len(self.canary.steps)}, {self.canary.share:.0%} of the replicas)")


@dataclass
class PlanLedger:
    """The fleet's recent decisions and state, indexed for the suppression rules.

    Parameters
    ----------
    at : datetime
        The tick being planned.
    pauses : dict
        Active pauses by ``(scope, name)``.
    busy : dict of int to list of ActionRun or CanaryInFlight
        Runs in flight (pending, scheduled, running), and running canaries, by model id.
    acted : dict of int to list of Acted
        Acting decisions of the look-back window by model id, oldest first.
    at_tick : dict of int to list of Decision
        Decisions already stored for this tick, by model id.
    states : dict
        ``for``/``keep_firing_for`` state rows by ``(model id, policy name)``.
    blocks : dict
        By ``(model id, policy name)``, the run whose failed or inconclusive
        verification keeps that policy from acting on that model again.
    deferred : list of (ActionRun, Decision)
        Runs waiting for their time (``scheduled``), with their decisions.
    rejected : dict
        By ``(model id, policy name)``, the newest decision of that policy for
        that model a person rejected within the look-back window: it holds the
        policy's cooldown from the moment it was answered.
    """

    at: datetime
    pauses: dict[tuple[str, str], Pause] = field(default_factory=dict)
    busy: dict[int, list[ActionRun | CanaryInFlight]] = field(default_factory=dict)
    acted: dict[int, list[Acted]] = field(default_factory=dict)
    at_tick: dict[int, list[Decision]] = field(default_factory=dict)
    states: dict[tuple[int, str], PolicyState] = field(default_factory=dict)
    blocks: dict[tuple[int, str], ActionRun] = field(default_factory=dict)
    deferred: list[tuple[ActionRun, Decision]] = field(default_factory=list)
    rejected: dict[tuple[int, str], Rejection] = field(default_factory=dict)

    def record(self, decision: Decision | Draft) -> None:
        """Add a decision this pass made (or found stored), so later rules of the pass see it."""
        if decision.status in ACTING_STATUSES:
            rows = self.acted.setdefault(decision.model_id, [])
            item = Acted.of(decision)
            rows.insert(bisect_right([r.created_at for r in rows], item.created_at), item)

    def last(self, model_id: int, action: str, *, before: datetime) -> Acted | None:
        """The newest acting decision of ``action`` for the model created before ``before``."""
        for item in reversed(self.acted.get(model_id, ())):
            if item.action == action and item.created_at < before:
                return item
        return None

    def count(self, model_id: int, policy: str, *, since: datetime, until: datetime) -> int:
        """Acting decisions of ``policy`` for the model created in ``(since, until]`` (follow-ups of verification aside)."""
        rows = self.acted.get(model_id, ())
        times = [r.created_at for r in rows]
        lo, hi = bisect_right(times, since), bisect_right(times, until)
        return sum(1 for r in rows[lo:hi] if r.policy == policy and not r.follow_up)

    def models_acted_on(self, *, since: datetime, until: datetime) -> set[int]:
        """Models with a decision acting without a person (proposed, approved) in ``(since, until]``."""
        found: set[int] = set()
        for model_id, rows in self.acted.items():
            times = [r.created_at for r in rows]
            lo, hi = bisect_right(times, since), bisect_right(times, until)
            if any(r.status in AUTOMATIC_STATUSES for r in rows[lo:hi]):
                found.add(model_id)
        return found

    def release(self, run: ActionRun) -> None:
        """A run that no longer holds its model (cancelled in this pass)."""
        runs = self.busy.get(run.model_id, [])
        self.busy[run.model_id] = [r for r in runs if r.id != run.id]

    def forget_before(self, oldest: datetime) -> None:
        """Drop acting decisions older than ``oldest`` (a long replay keeps the ledger small)."""
        for model_id, rows in list(self.acted.items()):
            cut = bisect_left([r.created_at for r in rows], oldest)
            if cut:
                del rows[:cut]


def read_ledger(session: Session, model_ids: Sequence[int], at: datetime, *, lookback: timedelta,
                policy_names: Iterable[str] = ()) -> PlanLedger:
    """Read the ledger of a planning pass at ``at`` for ``model_ids`` in a few fleet-wide queries.

    Parameters
    ----------
    session : Session
        Open session on the knowledge base.
    model_ids : sequence of int
        Models planned in this pass.
    at : datetime
        The tick's logical time.
    lookback : timedelta
        How far back acting decisions matter: the longest cooldown, ``never_with``
        window, rate-limit period or blast-radius period of the policy set.
    policy_names : iterable of str
        Policies whose ``for``/``keep_firing_for`` state to read.
    """
    at = ensure_utc(at)
    ledger = PlanLedger(at=at, pauses={(p.scope, p.name): p for p in queries.pauses(session)})
    if not model_ids:
        return ledger
    for run in queries.in_flight_actions(session):
        ledger.busy.setdefault(run.model_id, []).append(run)
    for canary, run, _ in running_canaries(session):  # a candidate serving a share: nothing else until it ends
        ledger.busy.setdefault(canary.model_id, []).append(CanaryInFlight(canary, run))
    ledger.deferred = queries.scheduled_runs(session)
    for row in queries.acting_decisions_fleet(session, since=at - lookback, until=at, statuses=ACTING_STATUSES):
        ledger.acted.setdefault(row.model_id, []).append(Acted(
            id=row.id, model_id=row.model_id, policy=row.policy_name, action=row.action, status=row.status,
            created_at=ensure_utc(row.created_at), tick_at=ensure_utc(row.tick_at) if row.tick_at else None,
            follow_up=row.follows_run_id is not None))  # oldest first, as the query orders them
    ledger.blocks = queries.verification_blocks(session, at)
    for row in recent_rejections(session, since=at - lookback, until=at):
        assert row.decided_at is not None  # answered decisions carry their answer's time
        ledger.rejected[(row.model_id, row.policy_name)] = Rejection(row.id, row.decided_by or "",
                                                                     ensure_utc(row.decided_at))
    for decision in queries.decisions_at_tick(session, at):
        ledger.at_tick.setdefault(decision.model_id, []).append(decision)
    names = list(policy_names)
    if names:
        wanted = set(model_ids)
        for state in queries.policy_states_fleet(session, names):
            if state.model_id in wanted:
                ledger.states[(state.model_id, state.policy_name)] = state
    return ledger
