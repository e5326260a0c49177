"""``mape policy simulate``: replay the recorded ticks through a candidate policy set, and compare.

What it does: :func:`simulate` reads the ticks the knowledge base recorded in a
time range and, for each one, decides what a planner with the candidate
policies would have decided, then compares that with the decisions the live
planner wrote at that tick. It writes nothing.

Each tick is planned as :meth:`mape.plan.planner.Planner.plan` plans it, with
the planner's own pieces: the context of each model from the rows as they
stood at the tick (:func:`mape.plan.context.assemble_context` over
:mod:`mape.plan.history`: the newest observations within the staleness bound,
the symptoms open then, the versions as they were), the conditions evaluated
on prepared CEL contexts, ``for`` and ``keep_firing_for`` moved by
:func:`mape.plan.firing.advance` on in-memory states, the firing policies
ranked by :meth:`~mape.plan.planner.Planner.rank`, and every status and reason
given by :func:`mape.plan.rules.decide` over one in-memory
:class:`~mape.plan.ledger.PlanLedger` that records each simulated decision.
So cooldowns, rate limits, ``never_with``, ``since_last`` and the blast radius
follow the *simulated* decisions, exactly as they would have live.

What is replayed as recorded, because a policy set does not change it here:
the observations and symptoms, the model versions, pauses, action runs (a
model is busy while a recorded run was in flight), canaries (a model is busy
while a recorded canary ran, at the step it was at:
:class:`~mape.plan.canary_replay.CanaryHistory`), verification verdicts and
their follow-up decisions, and decisions people asked for. The loop's feedback
is not simulated: a retrain the candidate set would have made produces no run,
no new version and no canary. A candidate policy's ``canary`` is described
instead (the steps it would take, and how many simulated retrains would have
started one: ``SimulationSummary.canaries``); its steps are not replayed, as
each is judged on the live predictions of a candidate that the replay never
trains (:mod:`mape.plan.canary_replay`). A simulated decision awaiting approval is answered as the
live one of the same model, policy and tick was (approved or rejected at
the same time), else it expires at its deadline.

``for`` needs history: before the first tick reported, the conditions are
evaluated over a warm-up of the recorded ticks (as long as the longest
``for`` plus ``keep_firing_for``), with the recorded decisions as history,
so a pending period that began before the range goes on counting.

Who calls it: ``mape policy simulate`` (:mod:`mape.cli`); the benchmark
``benchmarks/simulate.py``; tests.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import multiprocessing
import os
import re
import time as _time
from bisect import bisect_right
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from dataclasses import replace as _replace
from datetime import datetime, timedelta
from typing import Any, Literal, NamedTuple

import cel
from sqlalchemy.engine import Engine
from sqlmodel import Session

from knowledge import queries
from knowledge.canaries import canaries_between
from knowledge.database import create_engine_for, session_scope
from knowledge.tables import DecisionStatus, ManagedModel
from mape._util.timeutil import ensure_utc
from mape.config import BlastRadius, Utility
from mape.errors import SimulationError
from mape.plan import firing
from mape.plan.canary_replay import NOT_REPLAYED, CanaryHistory, CanaryPlan, canary_plans
from mape.plan.context import METRIC_ROOTS, assemble_context, metric_root
from mape.plan.expressions import Condition
from mape.plan.fields import blank_strings
from mape.plan.history import (
    ObservationSweep,
    RunHistory,
    SymptomHistory,
    VersionHistory,
    block_intervals,
    pause_intervals,
    pauses_by_key,
)
from mape.plan.ledger import ACTING_STATUSES, Acted, PlanLedger
from mape.plan.loader import LoadedPolicy
from mape.plan.planner import EvaluationError, Planner, PlanReport
from mape.plan.rules import decide

__all__ = ["LEGEND", "Outcome", "SimulatedTick", "SimulationError", "SimulationReport", "SimulationSummary", "simulate"]

logger = logging.getLogger(__name__)

#: What a recorded decision may have been when it was made (a person's answer or expiry came later).
_ANSWERED = (DecisionStatus.approved.value, DecisionStatus.rejected.value, DecisionStatus.expired.value)
_RECORDED_STATUSES = (*ACTING_STATUSES, DecisionStatus.rejected.value, DecisionStatus.expired.value)
#: Rows of observations per window read (about): a long replay never holds the whole table.
_WINDOW_ROWS = 200_000
#: Roots whose values have fixed types by key, where ``==`` is enough to know CEL sees the same value.
_TYPED_ROOTS = frozenset({*METRIC_ROOTS, "since_last"})
Keep = Literal["all", "diff", "none"]
#: The first line of the human-readable report: what the marker of each row means.
LEGEND = "  = same status   ~ different status   + simulated only   - live only"


class SimId(int):
    """The id of a simulated decision, shown ``s12`` so no reason mistakes it for a stored decision."""

    def __str__(self) -> str:
        return f"s{int(self)}"

    __repr__ = __str__

    def __format__(self, spec: str) -> str:
        return format(str(self), spec)


class Outcome(NamedTuple):
    """One decision at one tick, live or simulated (a tuple: a long replay makes millions).

    Parameters
    ----------
    model, policy, action, status, reason : str
        As in a decision row; ``status`` as the planner gave it at that tick
        (a later approval, rejection or expiry is in ``status_now``).
    id : str
        ``12`` for a stored decision, ``s12`` for a simulated one.
    status_now : str, optional
        Live decisions only: the status stored today, when it changed since.
    """

    model: str
    policy: str
    action: str
    status: str
    reason: str = ""
    id: str = ""
    status_now: str | None = None

    def as_dict(self) -> dict[str, Any]:
        found = {"model": self.model, "policy": self.policy, "action": self.action, "status": self.status,
                 "reason": self.reason, "id": self.id}
        if self.status_now is not None:
            found["status_now"] = self.status_now
        return found


@dataclass
class SimulatedTick:
    """One replayed tick: the simulated decisions, the live ones, and their differences.

    ``live_only``: decisions the live planner wrote and the candidate set would
    not have; ``simulated_only``: the reverse; ``changed``: the same model and
    policy with a different status, as ``(live, simulated)``.
    """

    at: datetime
    simulated: list[Outcome] = field(default_factory=list)
    live: list[Outcome] = field(default_factory=list)
    live_only: list[Outcome] = field(default_factory=list)
    simulated_only: list[Outcome] = field(default_factory=list)
    changed: list[tuple[Outcome, Outcome]] = field(default_factory=list)

    def compare(self) -> SimulatedTick:
        live = {(o.model, o.policy): o for o in self.live}
        simulated = {(o.model, o.policy): o for o in self.simulated}
        self.live_only = [o for key, o in live.items() if key not in simulated]
        self.simulated_only = [o for key, o in simulated.items() if key not in live]
        self.changed = [(live[key], o) for key, o in simulated.items() if key in live and live[key].status != o.status]
        return self

    @property
    def differs(self) -> bool:
        return bool(self.live_only or self.simulated_only or self.changed)

    def rows(self) -> Iterator[tuple[str, Outcome | None, Outcome | None]]:
        """``(marker, live, simulated)`` in the order of the simulated decisions, then the live-only ones.

        Markers: ``=`` same status, ``~`` different status, ``+`` simulated only, ``-`` live only.
        """
        live = {(o.model, o.policy): o for o in self.live}
        seen = set()
        for o in self.simulated:
            key = (o.model, o.policy)
            seen.add(key)
            other = live.get(key)
            yield ("+" if other is None else "=" if other.status == o.status else "~"), other, o
        for o in self.live:
            if (o.model, o.policy) not in seen:
                yield "-", o, None

    def lines(self, *, only_diff: bool = False) -> Iterator[str]:
        """A blank line, the tick's time, and a table of its decisions (none if nothing is to be shown)."""
        rows = [row for row in self.rows() if row[0] != "=" or not only_diff]
        if rows:
            yield ""
            yield self.at.isoformat()
            yield from _table(rows)

    def as_dict(self, *, only_diff: bool = False) -> dict[str, Any]:
        found: dict[str, Any] = {"at": self.at.isoformat()}
        if not only_diff:
            found["decisions"] = [o.as_dict() for o in self.simulated]
            found["live"] = [o.as_dict() for o in self.live]
        found["diff"] = {
            "live_only": [o.as_dict() for o in self.live_only],
            "simulated_only": [o.as_dict() for o in self.simulated_only],
            "changed": [{"model": s.model, "policy": s.policy, "action": s.action, "live_status": lv.status,
                         "simulated_status": s.status, "live_reason": lv.reason, "simulated_reason": s.reason,
                         "live_id": lv.id, "simulated_id": s.id}
                        for lv, s in self.changed],
        }
        return found


@dataclass
class SimulationSummary:
    """Totals over the replayed range (``SimulationReport.summary``)."""

    start: datetime
    end: datetime
    ticks: int = 0
    warmup_ticks: int = 0
    models: int = 0
    policies: list[str] = field(default_factory=list)
    live_statuses: Counter[str] = field(default_factory=Counter)
    simulated_statuses: Counter[str] = field(default_factory=Counter)
    live_acting: Counter[str] = field(default_factory=Counter)
    simulated_acting: Counter[str] = field(default_factory=Counter)
    ticks_with_differences: int = 0
    live_only: int = 0
    simulated_only: int = 0
    changed: int = 0
    first_divergence: dict[str, Any] | None = None
    evaluation_errors: int = 0
    missing_signals: int = 0
    workers: int = 1
    seconds: float = 0.0
    #: The candidate policies' canaries, by policy (described, not replayed: :mod:`mape.plan.canary_replay`).
    canaries: dict[str, CanaryPlan] = field(default_factory=dict)
    #: Acting simulated decisions of those policies: each would have started a canary after its gate.
    canary_retrains: Counter[str] = field(default_factory=Counter)
    #: Recorded canaries that ran during the range (their models were busy meanwhile, in the replay as live).
    recorded_canaries: int = 0

    def add(self, tick: SimulatedTick) -> None:
        """Count one replayed tick (compared: :meth:`SimulatedTick.compare`)."""
        self.tally([(o.model, o.status) for o in tick.live], [(o.model, o.status) for o in tick.simulated])
        self.differences(tick)

    def tally(self, live: Sequence[tuple[str, str]], simulated: Sequence[tuple[str, str]]) -> None:
        """Count one tick's decisions, given as ``(model, status)``."""
        self.ticks += 1
        for rows, statuses, acting in ((live, self.live_statuses, self.live_acting),
                                       (simulated, self.simulated_statuses, self.simulated_acting)):
            statuses.update(status for _, status in rows)
            for model, status in rows:
                if status in ACTING_STATUSES:
                    acting[model] += 1

    def differences(self, tick: SimulatedTick) -> None:
        """Count the differences of one compared tick, and remember the first."""
        if not tick.differs:
            return
        self.ticks_with_differences += 1
        self.live_only += len(tick.live_only)
        self.simulated_only += len(tick.simulated_only)
        self.changed += len(tick.changed)
        if self.first_divergence is None:
            if tick.changed:
                live, sim = tick.changed[0]
                kind, model, policy, before, after = "changed", sim.model, sim.policy, live.status, sim.status
            elif tick.live_only:
                o = tick.live_only[0]
                kind, model, policy, before, after = "live_only", o.model, o.policy, o.status, None
            else:
                o = tick.simulated_only[0]
                kind, model, policy, before, after = "simulated_only", o.model, o.policy, None, o.status
            self.first_divergence = {"at": tick.at.isoformat(), "kind": kind, "model": model, "policy": policy,
                                     "live_status": before, "simulated_status": after}

    def lines(self) -> Iterator[str]:
        """The totals as text: the range, statuses live and simulated, acting decisions by model, the differences."""
        return _summary_lines(self)

    def as_dict(self) -> dict[str, Any]:
        statuses = sorted(set(self.live_statuses) | set(self.simulated_statuses))
        models = sorted(set(self.live_acting) | set(self.simulated_acting))
        return {
            "start": self.start.isoformat(), "end": self.end.isoformat(), "ticks": self.ticks,
            "warmup_ticks": self.warmup_ticks, "models": self.models, "policies": list(self.policies),
            "statuses": {s: {"live": self.live_statuses[s], "simulated": self.simulated_statuses[s]}
                         for s in statuses},
            "acting_by_model": {m: {"live": self.live_acting[m], "simulated": self.simulated_acting[m]}
                                for m in models},
            "ticks_with_differences": self.ticks_with_differences,
            "differences": {"live_only": self.live_only, "simulated_only": self.simulated_only,
                            "changed": self.changed},
            "first_divergence": self.first_divergence,
            "evaluation_errors": {"total": self.evaluation_errors, "missing_signals": self.missing_signals},
            "canaries": {"policies": {name: {**plan.as_dict(), "simulated_retrains": self.canary_retrains[name],
                                             "replayed": False, "note": NOT_REPLAYED}
                                      for name, plan in self.canaries.items()},
                         "recorded": self.recorded_canaries},
            "workers": self.workers, "seconds": round(self.seconds, 3),
        }


@dataclass
class SimulationReport:
    """What :func:`simulate` found: the kept ticks (see ``keep``) and the summary."""

    summary: SimulationSummary
    ticks: list[SimulatedTick] = field(default_factory=list)

    @property
    def agrees(self) -> bool:
        """Whether the candidate set decided exactly as the live planner did, on every tick."""
        return self.summary.ticks_with_differences == 0

    def as_dict(self, *, only_diff: bool = False) -> dict[str, Any]:
        return {"summary": self.summary.as_dict(),
                "ticks": [t.as_dict(only_diff=only_diff) for t in self.ticks if t.differs or not only_diff]}

    def lines(self, *, only_diff: bool = False) -> Iterator[str]:
        """The human-readable report: the legend, one block per tick, then the summary."""
        yield LEGEND
        for tick in self.ticks:
            yield from tick.lines(only_diff=only_diff)
        yield ""
        yield from self.summary.lines()

    def __str__(self) -> str:
        return "\n".join(self.lines())


def _table(rows: list[tuple[str, Outcome | None, Outcome | None]]) -> Iterator[str]:
    """Aligned rows: marker, model, policy, action, ``live -> simulated`` status, and the reasons."""
    cells = []
    for marker, live, sim in rows:
        either = sim if sim is not None else live
        assert either is not None
        before = live.status if live is not None else "-"
        after = sim.status if sim is not None else "-"
        status = after if marker == "=" else f"{before} -> {after}"
        if marker == "~":
            reason = "; ".join(part for part in (f"simulated: {sim.reason}" if sim and sim.reason else "",
                                                 f"live: {live.reason}" if live and live.reason else "") if part)
        elif marker == "-":
            reason = f"live: {live.reason}" if live and live.reason else ""
        else:
            reason = sim.reason if sim else ""
        cells.append((marker, either.model, either.policy, either.action, status, reason))
    widths = [max(len(c[i]) for c in cells) for i in range(5)]
    for cell in cells:
        line = "  ".join(text.ljust(width) for text, width in zip(cell[:5], widths))
        yield f"  {line}  {cell[5]}".rstrip()


def _summary_lines(s: SimulationSummary) -> Iterator[str]:
    yield (f"replayed {s.ticks} tick{'' if s.ticks == 1 else 's'} from {s.start.isoformat()} to "
           f"{s.end.isoformat()}: {s.models} model{'' if s.models == 1 else 's'}, "
           f"{len(s.policies)} polic{'y' if len(s.policies) == 1 else 'ies'}"
           + (f", after {s.warmup_ticks} warm-up tick{'' if s.warmup_ticks == 1 else 's'}" if s.warmup_ticks else ""))
    statuses = sorted(set(s.live_statuses) | set(s.simulated_statuses))
    width = max([len("status")] + [len(x) for x in statuses])
    yield f"  {'status'.ljust(width)}  {'live':>8}  {'simulated':>9}"
    for status in statuses:
        yield f"  {status.ljust(width)}  {s.live_statuses[status]:>8}  {s.simulated_statuses[status]:>9}"
    models = sorted(set(s.live_acting) | set(s.simulated_acting))
    if models:
        shown = ", ".join(f"{m} {s.live_acting[m]} -> {s.simulated_acting[m]}" for m in models[:20])
        more = f", ... ({len(models) - 20} more)" if len(models) > 20 else ""
        yield f"  acting decisions by model (live -> simulated): {shown}{more}"
    if s.first_divergence is None:
        yield f"  no differences: the candidate policies decide as the live planner did on all {s.ticks} ticks"
    else:
        d = s.first_divergence
        yield (f"  first divergence: {d['at']}: {d['model']}/{d['policy']} "
               f"{d['live_status'] or '-'} -> {d['simulated_status'] or '-'}")
        yield (f"  {s.ticks_with_differences} of {s.ticks} ticks differ: {s.changed} changed, "
               f"{s.simulated_only} simulated only, {s.live_only} live only")
    if s.evaluation_errors:
        yield (f"  {s.evaluation_errors} condition evaluation{'' if s.evaluation_errors == 1 else 's'} failed "
               f"({s.missing_signals} on a missing signal); those policies did not fire then")
    for name, plan in s.canaries.items():
        n = s.canary_retrains[name]
        yield (f"  canary of {name}: {n} simulated retrain{'' if n == 1 else 's'} would each start one after the "
               f"gate: {plan}; {NOT_REPLAYED}")
    if s.recorded_canaries:
        yield (f"  {s.recorded_canaries} recorded canar{'y' if s.recorded_canaries == 1 else 'ies'} kept "
               f"{'its model' if s.recorded_canaries == 1 else 'their models'} busy while running, as live")


# --------------------------------------------------------------------------------------------- the replay


@dataclass
class _Recorded:
    """A recorded decision as the rules see it at its creation (status as made, not as answered later)."""

    id: int
    model_id: int
    policy_name: str
    action: str
    status: str
    created_at: datetime
    tick_at: datetime | None
    follows_run_id: int | None


class _State:
    """Where a policy with ``for`` stands for one model: the fields of a ``policy_state`` row, in memory."""

    __slots__ = ("model_id", "policy_name", "pending_since", "last_true_at", "firing_since", "updated_at")

    def __init__(self, model_id: int, policy_name: str, updated_at: datetime) -> None:
        self.model_id, self.policy_name, self.updated_at = model_id, policy_name, updated_at
        self.pending_since: datetime | None = None
        self.last_true_at: datetime | None = None
        self.firing_since: datetime | None = None


class _Acting:
    """An acting decision of the replay's history: in the ledger while it acts, in ``since_last`` too."""

    __slots__ = ("acted", "alive", "model_id", "created_at")

    def __init__(self, acted: Acted) -> None:
        self.acted = acted
        self.alive = True
        self.model_id = acted.model_id
        self.created_at = acted.created_at


def _as_made(row: Any) -> tuple[str, str | None, datetime | None]:
    """A stored decision's status when it was made, its status now if different, and when that changed."""
    status = row.status
    if status in _ANSWERED and row.decided_at is not None and ensure_utc(row.decided_at) > ensure_utc(row.created_at):
        return DecisionStatus.awaiting_approval.value, status, ensure_utc(row.decided_at)
    return status, None, None  # as made: a request by a person is approved from the start


class _ModelPlan:
    """One model's replay state: its policies, its CEL context kept between ticks, the last answers."""

    __slots__ = ("model", "model_id", "policies", "prepared", "sources", "roots", "holds", "errors", "versions",
                 "cached")

    def __init__(self, model: ManagedModel, policies: list[LoadedPolicy]) -> None:
        self.model = model
        self.model_id: int = model.id  # type: ignore[assignment]
        self.policies = [(policy.name, policy) for policy in policies]
        self.prepared = cel.Context()
        self.sources: dict[str, Any] = {}  # each root as the context gave it last
        self.roots: dict[str, Any] = {}  # each root as converted to CEL last (cut down to the fields read)
        self.holds: dict[str, bool | None] | None = None
        self.errors: tuple[int, int] = (0, 0)
        self.versions: object = None  # the version snapshot the cached roots were built from
        self.cached: dict[str, Any] = {}


def _same(a: Any, b: Any) -> bool:
    """Equal with equal types throughout: ``1`` and ``1.0`` are different CEL values."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same(v, b[k]) for k, v in a.items())
    if isinstance(a, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return bool(a == b)


_SELECTION = re.compile(r"\s*\.\s*([A-Za-z_]\w*)")
_CALL = re.compile(r"\s*\(")


def fields_read(expression: str, root: str) -> frozenset[str] | None:
    """The fields of ``root`` an expression selects, or None when it reads the root as a whole.

    Only ``root.field`` selections (``has(root.field)`` too) count as reading
    fields; any other use (``'x' in root``, ``size(root)``, ``root['x']``,
    ``root.exists(...)``, ``root.?x``) reads the whole root. A condition that
    reads only some fields evaluates the same on the root cut down to them.

    >>> sorted(fields_read("has(model.labels) && model.labels.team == 'model.name' && model.can_roll_back", "model"))
    ['can_roll_back', 'labels']
    >>> print(fields_read("'data_drift' in symptoms", "symptoms"))
    None
    >>> fields_read("drift.share_drifted > 0.3", "model")
    frozenset()
    """
    text = blank_strings(expression)
    found: set[str] = set()
    for match in re.finditer(rf"(?<![\w.]){re.escape(root)}\b", text):
        selection = _SELECTION.match(text, match.end())
        if selection is None or _CALL.match(text, selection.end()):
            return None
        found.add(selection.group(1))
    return frozenset(found)


class _Replay:
    """The replay of a set of models over the ticks: what the planner would have decided at each.

    One instance per process: all the models (the blast radius counts models
    fleet-wide), or a share of them when no fleet-wide rule applies.
    """

    def __init__(self, session: Session, planner: Planner, models: Sequence[ManagedModel], ticks: Sequence[datetime],
                 start: datetime, *, max_age: timedelta | None, fleet_size: int, id_start: int = 1,
                 id_step: int = 1) -> None:
        self.session = session
        self.planner = planner
        self.ticks = list(ticks)
        self.start = start
        self.max_age = max_age
        self.fleet_size = fleet_size
        self._ids = itertools.count(id_start, id_step)
        self.plans = [_ModelPlan(m, planner._selected(m)) for m in models if m.id is not None]
        self.model_ids = [p.model_id for p in self.plans]
        self.stateful = frozenset(planner._stateful)
        # the roots the conditions read, each cut down to the fields they select (None: read whole); the
        # guards of alternatives are evaluated by the planner's own _choose on these roots too
        conditions = [c for p in planner.policies for c in (p.when, p.unless) if c is not None]
        guards = [planner._guard(a.when) for p in planner.policies for a in p.policy.spec.alternatives if a.when]
        conditions += [g for g in guards if isinstance(g, Condition)]
        self._choosing = PlanReport(at=ticks[0])  # collects the errors of alternatives' guards
        self.roots: dict[str, frozenset[str] | None] = {}
        for root in sorted({name for c in conditions for name in c.variables}):
            reads = [fields_read(c.expression, root) for c in conditions if root in c.variables]
            self.roots[root] = None if any(r is None for r in reads) else frozenset().union(*reads)  # type: ignore[misc]
        model_fields = self.roots.get("model", frozenset())
        # without production_age_seconds, the model and baseline roots change only with the versions
        self.per_snapshot = {"baseline", "promotion"} | ({"model"} if model_fields is not None
                                            and "production_age_seconds" not in model_fields else set())
        self._all_roots = tuple(self.roots)
        self._metric_roots = tuple(root for root in self.roots if root in METRIC_ROOTS)
        self._per_tick_roots = tuple(root for root in self.roots if root not in self.per_snapshot)
        self._root_specs = tuple((root, fields, root in _TYPED_ROOTS) for root, fields in self.roots.items())
        first, last = self.ticks[0], self.ticks[-1]
        ids = self.model_ids
        self.ledger = PlanLedger(at=first)
        self.lookback = planner._lookback
        self.sweep = ObservationSweep(session, ids, first, max_age=max_age)
        self.symptoms = SymptomHistory(queries.symptoms_between(session, ids, first, last))
        versions = [v for rows in queries.versions_fleet(session, ids).values() for v in rows]
        makers = queries.action_runs_by_id(session, [v.created_by_action_run_id for v in versions
                                                     if v.created_by_action_run_id is not None])
        self.versions = VersionHistory(versions, queries.promotions(session, ids),
                                       {i: ensure_utc(r.started_at or r.created_at) for i, r in makers.items()})
        self.runs = RunHistory(queries.action_runs_between(session, ids, first, last))
        self.canaries = CanaryHistory(canaries_between(session, ids, first, last))
        self.pauses = pause_intervals(session)
        self.blocks = block_intervals(session, last)
        self._trimmed = first
        self._since: dict[int, dict[str, list[_Acting]]] = {m: {} for m in ids}
        self._events: list[tuple[datetime, int, _Acting, str]] = []
        self._seq = itertools.count()
        wanted = set(ids)
        self._recorded: list[tuple[_Recorded, str | None, datetime | None]] = []
        # the rules look back lookback at most; since_last, if a condition reads it, to the first decision
        history_from = None if "since_last" in self.roots else first - self.lookback - timedelta(seconds=1)
        for row in queries.decision_rows(session, since=start, until=last, planner_ticks=False,
                                         statuses=_RECORDED_STATUSES, created_after=history_from):
            if row.model_id not in wanted:
                continue
            made, later, when = _as_made(row)
            if made not in ACTING_STATUSES:
                continue
            self._recorded.append((_Recorded(row.id, row.model_id, row.policy_name, row.action, made,
                                             ensure_utc(row.created_at),
                                             ensure_utc(row.tick_at) if row.tick_at is not None else None,
                                             row.follows_run_id), later, when))
        self._recorded.reverse()  # the next to apply is last
        self._answers: dict[tuple[int, str, datetime], tuple[datetime, str]] = {}
        for row in queries.decision_rows(session, since=start, until=last, planner_ticks=True,
                                         statuses=(DecisionStatus.approved.value, DecisionStatus.rejected.value)):
            if row.decided_at is not None and row.tick_at is not None:
                self._answers[(row.model_id, row.policy_name, ensure_utc(row.tick_at))] = (
                    ensure_utc(row.decided_at), row.status)
        self.errors = 0
        self.missing = 0

    # ------------------------------------------------------------------ the ledger over time

    def _record(self, decision: Any) -> _Acting | None:
        if decision.status not in ACTING_STATUSES:
            return None
        self.ledger.record(decision)
        rows = self.ledger.acted[decision.model_id]
        created = ensure_utc(decision.created_at)
        item = rows[bisect_right([r.created_at for r in rows], created) - 1]
        acting = _Acting(item)
        self._since[decision.model_id].setdefault(decision.action, []).append(acting)
        return acting

    def _later(self, acting: _Acting, when: datetime, status: str) -> None:
        heapq.heappush(self._events, (when, next(self._seq), acting, status))

    def _apply_events(self, at: datetime) -> None:
        """Approvals, rejections and expiries due at ``at`` (the live pass expires before it plans)."""
        while self._events and self._events[0][0] <= at:
            _, _, acting, status = heapq.heappop(self._events)
            rows = self.ledger.acted.get(acting.model_id, [])
            index = next((i for i in range(len(rows) - 1, -1, -1) if rows[i] is acting.acted), None)
            if status in ACTING_STATUSES:
                acting.acted = _replace(acting.acted, status=status)
                if index is not None:
                    rows[index] = acting.acted
            else:
                acting.alive = False
                if index is not None:
                    del rows[index]

    def _take_recorded(self, at: datetime) -> dict[int, list[_Recorded]]:
        """Add the recorded decisions made by ``at``; the follow-ups of this very tick by model."""
        this_tick: dict[int, list[_Recorded]] = {}
        while self._recorded and self._recorded[-1][0].created_at <= at:
            decision, later, when = self._recorded.pop()
            acting = self._record(decision)
            if acting is not None and later is not None and when is not None:
                self._later(acting, when, later)
            if decision.tick_at == at and decision.follows_run_id is not None:
                this_tick.setdefault(decision.model_id, []).append(decision)
        return this_tick

    def _since_last(self, model_id: int, at: datetime) -> dict[str, float]:
        found: dict[str, float] = {}
        for action, history in self._since[model_id].items():
            for acting in reversed(history):
                if acting.alive and acting.created_at <= at:
                    found[action] = (at - acting.created_at).total_seconds()
                    break
        return found

    # ------------------------------------------------------------------ one tick

    def _context(self, plan: _ModelPlan, at: datetime, oldest: datetime | None) -> dict[str, Any]:
        """The roots of the model's context that the conditions read, as the live planner builds them."""
        model_id = plan.model_id
        versions = self.versions.at(model_id, at)
        cached = plan.cached if versions is plan.versions else {}
        wanted = self._per_tick_roots if cached else self._all_roots
        others = [root for root in wanted if root not in METRIC_ROOTS]
        context = assemble_context(plan.model, {},
                                   self.symptoms.open_at(model_id, at) if "symptoms" in others else [],  # type: ignore[arg-type]
                                   versions,  # type: ignore[arg-type]
                                   self._since_last(model_id, at) if "since_last" in others else {}, at,
                                   oldest=oldest, roots=others) if others else {}
        latest = self.sweep.latest[model_id]
        for root in self._metric_roots:  # the same as assemble_context's, from the observations of that root only
            context[root] = metric_root(latest[root], root, oldest)  # type: ignore[arg-type]
        if cached:
            context.update(cached)
        else:
            plan.versions = versions
            plan.cached = {root: context[root] for root in self.per_snapshot if root in context}
        return context

    def _holds(self, plan: _ModelPlan, context: dict[str, Any]) -> dict[str, bool | None]:
        """Every policy's condition for the model; CEL values re-converted only for roots that changed."""
        changed = plan.holds is None
        sources, converted = plan.sources, plan.roots
        for root, fields, typed in self._root_specs:
            source = context[root]
            if sources.get(root) is source:
                continue  # the very root of the last tick (kept while the versions did not change)
            sources[root] = source
            value = source if fields is None or source.keys() <= fields else \
                {key: item for key, item in source.items() if key in fields}
            previous = converted.get(root, plan)
            if previous is plan or value != previous or (not typed and not _same(value, previous)):
                plan.prepared.add_variable(root, value)
                converted[root] = value
                changed = True
        if changed:
            errors: list[EvaluationError] = []
            condition = self.planner._condition
            plan.holds = {name: condition(policy, plan.prepared, plan.model, errors) for name, policy in plan.policies}
            plan.errors = (len(errors), sum(1 for e in errors if e.missing))
        assert plan.holds is not None
        self.errors += plan.errors[0]
        self.missing += plan.errors[1]
        return plan.holds

    def step(self, at: datetime, *, decide_now: bool) -> list[tuple[int, str, str, str, str, str]]:
        """Plan the tick at ``at``; its simulated decisions as ``(model_id, policy, action, status, reason, id)``."""
        self._apply_events(at)
        this_tick = self._take_recorded(at)
        ledger = self.ledger
        ledger.at = at
        if at - self._trimmed >= max(self.lookback, timedelta(hours=1)):
            ledger.forget_before(at - self.lookback)
            self._trimmed = at
        ledger.pauses = pauses_by_key(self.pauses.at(at))
        ledger.blocks = {(m, p): run for m, p, run in self.blocks.at(at)}
        ledger.busy = {}
        for model_id in self.runs.model_ids:
            busy = self.runs.busy_at(model_id, at)
            if busy:
                ledger.busy[model_id] = busy
        for model_id in self.canaries.model_ids:  # after the runs, as the live ledger lists them
            canaries = self.canaries.busy_at(model_id, at)
            if canaries:
                ledger.busy[model_id] = [*ledger.busy.get(model_id, ()), *canaries]
        oldest = at - self.max_age if self.max_age is not None else None
        stateful, rank = self.stateful, self.planner.rank
        decisions: list[tuple[int, str, str, str, str, str]] = []
        for plan in self.plans:
            model_id = plan.model_id
            self.sweep.advance(model_id, at)
            if not plan.policies:
                continue
            context = self._context(plan, at, oldest)
            holds = self._holds(plan, context)
            model = plan.model
            fired = []
            for name, policy in plan.policies:
                if name in stateful:
                    fires = self._fires(policy, model_id, at, holds[name])
                else:
                    fires = holds[name] is True  # what Planner._fires answers for a policy without for/keep
                if fires:
                    fired.append(policy)
            if not fired or not decide_now:
                continue
            choices: dict[str, Any] = {}
            for policy in fired:
                if policy.policy.spec.alternatives:  # the action with the highest utility, as the planner picks it
                    choices[policy.name] = self.planner._choose(policy, model, context, self._choosing)
                    self._count_choice_errors()
            if len(fired) > 1:
                fired.sort(key=lambda p: rank(p, choices[p.name].action.type if p.name in choices else None))
            winner: Any = next((d for d in this_tick.get(model_id, ()) if d.status in ACTING_STATUSES), None)
            for policy in fired:
                choice = choices.get(policy.name)
                action = choice.action.type if choice is not None else policy.action
                verdict = decide(policy, model, at, ledger, winner, blast=self.planner.blast_radius,
                                 fleet_size=self.fleet_size, action=action)
                sim_id = SimId(next(self._ids))
                if verdict.status in ACTING_STATUSES:
                    draft = self.planner._draft(policy, model, at, verdict, context, ledger, choice)
                    draft.id = sim_id
                    if winner is None:
                        winner = draft
                    self._acted(draft, model_id, policy.name, at)
                decisions.append((model_id, policy.name, action, verdict.status, verdict.reason, str(sim_id)))
        return decisions

    def _count_choice_errors(self) -> None:
        errors = self._choosing.errors
        if errors:
            self.errors += len(errors)
            self.missing += sum(1 for e in errors if e.missing)
            errors.clear()

    def _fires(self, policy: LoadedPolicy, model_id: int, at: datetime, holds: bool | None) -> bool:
        """Whether a policy with ``for`` or ``keep_firing_for`` fires: :meth:`Planner._fires` on in-memory states.

        The same steps as the live planner's, on a light stand-in for the
        ``policy_state`` row (a table object costs more to update than the rule).
        """
        key = (model_id, policy.name)
        state = self.ledger.states.get(key)
        if state is None:
            if holds is not True:
                return False  # nothing pending, nothing to remember
            state = _State(model_id, policy.name, at - timedelta(microseconds=1))
            self.ledger.states[key] = state  # type: ignore[assignment]
        if firing.is_replay(state, at):  # type: ignore[arg-type]
            return state.firing_since is not None
        spec = policy.policy.spec
        return firing.advance(state, at, holds, for_=spec.for_, keep_firing_for=spec.keep_firing_for)  # type: ignore[arg-type]

    def _acted(self, draft: Any, model_id: int, policy: str, at: datetime) -> None:
        """Record a simulated acting decision, and when a person or its deadline answers it."""
        acting = self._record(draft)
        if acting is None or draft.status != DecisionStatus.awaiting_approval.value:
            return
        answer = self._answers.get((model_id, policy, at))
        deadline = ensure_utc(draft.expires_at) if draft.expires_at is not None else None
        if answer is not None and (deadline is None or answer[0] < deadline):
            self._later(acting, answer[0], answer[1])
        elif deadline is not None:
            self._later(acting, deadline, DecisionStatus.expired.value)

    def windows(self, size: int) -> Iterator[tuple[list[datetime], list[list[tuple[int, str, str, str, str, str]]]]]:
        """Replay every tick, ``size`` at a time: ``(ticks, decisions per tick)``; warm-up ticks report nothing."""
        for offset in range(0, len(self.ticks), size):
            window = self.ticks[offset:offset + size]
            self.sweep.load(window[-1])
            yield window, [self.step(at, decide_now=at >= self.start) for at in window]


# --------------------------------------------------------------------------------------------- the runner


def _warmup(policies: Sequence[LoadedPolicy], ticks_before: Sequence[datetime], start: datetime) -> list[datetime]:
    longest = max((p.policy.spec.for_ + p.policy.spec.keep_firing_for for p in policies), default=timedelta(0))
    if longest <= timedelta(0):
        return []
    return [t for t in ticks_before if t >= start - longest]


def _window_size(models: int) -> int:
    return max(1, _WINDOW_ROWS // (4 * max(1, models)))


def _worker(url: str, planner: Planner, models: list[ManagedModel], ticks: list[datetime], start: datetime,
            max_age: timedelta | None, fleet_size: int, index: int, step: int, size: int, conn: Any) -> None:
    """A replay of a share of the models in a child process: sends each window's decisions, then its error counts."""
    engine = create_engine_for(url)
    try:
        with session_scope(engine) as session:
            replay = _Replay(session, planner, models, ticks, start, max_age=max_age, fleet_size=fleet_size,
                             id_start=index + 1, id_step=step)
            for _, decisions in replay.windows(size):
                conn.send(decisions)
            conn.send(("done", replay.errors, replay.missing))
    except BaseException as exc:  # noqa: BLE001 - reported to the parent, which raises it
        conn.send(("error", f"{type(exc).__name__}: {exc}"))
    finally:
        conn.close()
        engine.dispose()


def _workers(requested: int | None, planner: Planner, models: int, ticks: int) -> int:
    if planner.blast_radius is not None:
        return 1  # the blast radius counts models fleet-wide: one process sees them all
    if "fork" not in multiprocessing.get_all_start_methods():
        return 1
    if requested is not None:
        return max(1, min(requested, models))
    if models * ticks < 200_000:
        return 1
    return max(1, min(os.cpu_count() or 1, models, 8))


def simulate(engine: Engine, policies: Sequence[LoadedPolicy], *, start: datetime, end: datetime,
             models: Sequence[ManagedModel] | None = None, max_age: timedelta | None = None,
             blast_radius: BlastRadius | None = None, utility: Utility | None = None, warmup: bool = True,
             workers: int | None = 1,
             keep: Keep = "all", on_tick: Callable[[SimulatedTick], None] | None = None) -> SimulationReport:
    """Replay the ticks recorded in ``[start, end]`` with ``policies`` and compare with what was decided live.

    Parameters
    ----------
    engine : Engine
        The knowledge base (only read).
    policies : sequence of LoadedPolicy
        The candidate policy set.
    start, end : datetime
        The range of recorded ticks to report (aware UTC).
    models : sequence of ManagedModel, optional
        The models the live planner planned (the configured ones); default:
        every stored model. Their order is the planning order.
    max_age : timedelta, optional
        The staleness bound of signals (``settings.effective_signal_max_age``).
    blast_radius : BlastRadius, optional
        ``plan.blast_radius`` of the settings.
    utility : Utility, optional
        ``plan.utility`` of the settings: how policies with ``alternatives`` choose.
    warmup : bool
        Replay the ticks before ``start`` that ``for`` and ``keep_firing_for``
        need (decisions not reported).
    workers : int, optional
        Processes to replay in (shares of the models); ``None``: as many as
        the machine has cores for a large replay. Always one with a blast
        radius, which counts models fleet-wide.
    keep : {"all", "diff", "none"}
        Which ticks the report keeps: every tick with a decision, only those
        that differ, or none (the summary counts them all).
    on_tick : callable, optional
        Called with every replayed tick, in order, as it is done.

    Returns
    -------
    SimulationReport

    Raises
    ------
    SimulationError
        No recorded tick in the range (the message names the recorded span), or no model.
    """
    began = _time.perf_counter()
    start, end = ensure_utc(start), ensure_utc(end)
    if end < start:
        raise SimulationError(f"the range ends ({end.isoformat()}) before it starts ({start.isoformat()})")
    planner = Planner(policies, actor="simulate", max_age=max_age, blast_radius=blast_radius, utility=utility)
    with session_scope(engine) as session:
        first, last, count = queries.tick_span(session)
        if count == 0:
            raise SimulationError(f"the knowledge base at {engine.url.render_as_string(hide_password=True)} has no "
                                  "recorded ticks: nothing to replay")
        ticks = queries.tick_times(session, since=start, until=end)
        if not ticks:
            assert first is not None and last is not None
            raise SimulationError(f"no recorded ticks between {start.isoformat()} and {end.isoformat()}; the "
                                  f"knowledge base has {count} from {first.isoformat()} to {last.isoformat()}")
        before = queries.tick_times(session, since=start - _longest(policies), until=start)
        before = [t for t in before if t < start]
        if models is None:
            models = sorted(queries.models_by_name(session).values(), key=lambda m: m.id or 0)
        models = [m for m in models if m.id is not None]
        recorded_canaries = len(canaries_between(session, [m.id for m in models if m.id is not None],
                                                 ticks[0], ticks[-1]))
    if not models:
        raise SimulationError("no managed models in the knowledge base: nothing to plan for")
    warm = _warmup(policies, before, start) if warmup else []
    all_ticks = warm + ticks
    summary = SimulationSummary(start=ticks[0], end=ticks[-1], warmup_ticks=len(warm), models=len(models),
                                policies=[p.name for p in policies], canaries=canary_plans(policies),
                                recorded_canaries=recorded_canaries)
    report = SimulationReport(summary=summary)
    names = {m.id: m.name for m in models}
    raw_ticks: dict[Any, datetime] = {}
    size = _window_size(len(models))
    n = _workers(workers, planner, len(models), len(all_ticks))
    summary.workers = n

    def emit(window: list[datetime], decisions: list[list[tuple[int, str, str, str, str, str]]],
             session: Session) -> None:
        reported = [(at, rows) for at, rows in zip(window, decisions) if at >= start]
        if not reported:
            return
        live = _live(session, reported[0][0], reported[-1][0], names, raw_ticks)
        for at, rows in reported:
            recorded = live.get(at, [])
            summary.tally([(o.model, o.status) for o in recorded], [(names[row[0]], row[3]) for row in rows])
            if summary.canaries:
                summary.canary_retrains.update(p for _, p, a, status, _, _ in rows
                                               if p in summary.canaries and a == "retrain" and status in ACTING_STATUSES)
            if keep != "all" and on_tick is None and len(recorded) == len(rows) and \
                    {(o.model, o.policy): o.status for o in recorded} == \
                    {(names[m], p): status for m, p, _, status, _, _ in rows}:
                continue  # the same decisions: nothing to keep or show (the common case, made cheap)
            tick = SimulatedTick(at=at, live=recorded,
                                 simulated=[Outcome(names[m], p, a, s, r, i) for m, p, a, s, r, i in rows]).compare()
            summary.differences(tick)
            if keep == "all" and (tick.simulated or tick.live) or keep == "diff" and tick.differs:
                report.ticks.append(tick)
            if on_tick is not None:
                on_tick(tick)

    if n == 1:
        with session_scope(engine) as session:
            replay = _Replay(session, planner, models, all_ticks, start, max_age=max_age, fleet_size=len(models))
            for window, decisions in replay.windows(size):
                emit(window, decisions, session)
            summary.evaluation_errors, summary.missing_signals = replay.errors, replay.missing
    else:
        _run_parallel(engine, planner, models, all_ticks, start, max_age, n, size, emit, summary)
    summary.seconds = _time.perf_counter() - began
    logger.info("Replayed %d ticks of %d models in %.1fs with %d processes: %d differ", summary.ticks, summary.models,
                summary.seconds, summary.workers, summary.ticks_with_differences)
    return report


def _longest(policies: Sequence[LoadedPolicy]) -> timedelta:
    return max((p.policy.spec.for_ + p.policy.spec.keep_firing_for for p in policies), default=timedelta(0))


def _run_parallel(engine: Engine, planner: Planner, models: list[ManagedModel], ticks: list[datetime],
                  start: datetime, max_age: timedelta | None, n: int, size: int,
                  emit: Callable[[list[datetime], list[list[tuple[int, str, str, str, str, str]]], Session], None],
                  summary: SimulationSummary) -> None:
    """Replay shares of the models in ``n`` forked processes and merge their windows in model order."""
    context = multiprocessing.get_context("fork")
    url = engine.url.render_as_string(hide_password=False)
    shares = [models[i::n] for i in range(n)]
    order = {m.id: i for i, m in enumerate(models)}
    pipes, processes = [], []
    engine.dispose()  # no pooled connection crosses the fork
    for index, share in enumerate(shares):
        receive, send = context.Pipe(duplex=False)
        process = context.Process(target=_worker, args=(url, planner, share, ticks, start, max_age, len(models),
                                                        index, n, size, send), daemon=True)
        process.start()
        send.close()
        pipes.append(receive)
        processes.append(process)
    try:
        with session_scope(engine) as session:
            for offset in range(0, len(ticks), size):
                window = ticks[offset:offset + size]
                merged: list[list[tuple[int, str, str, str, str, str]]] = [[] for _ in window]
                for pipe in pipes:
                    part = _receive(pipe)
                    if isinstance(part, tuple) and part and part[0] == "error":
                        raise SimulationError(f"a replay process failed: {part[1]}")
                    for rows, more in zip(merged, part):
                        rows.extend(more)
                for rows in merged:
                    rows.sort(key=lambda row: order[row[0]])  # stable: each model's decisions stay in rank order
                emit(window, merged, session)
            for pipe in pipes:
                done = _receive(pipe)
                if done[0] == "error":
                    raise SimulationError(f"a replay process failed: {done[1]}")
                summary.evaluation_errors += done[1]
                summary.missing_signals += done[2]
    finally:
        for process in processes:
            process.join(timeout=5)
            if process.is_alive():
                process.terminate()


def _receive(pipe: Any) -> Any:
    try:
        return pipe.recv()
    except EOFError:
        raise SimulationError("a replay process ended without its results (killed, or out of memory?)") from None


def _live(session: Session, first: datetime, last: datetime, names: dict[int | None, str],
          ticks: dict[Any, datetime]) -> dict[datetime, list[Outcome]]:
    """The live planner's decisions of the ticks in ``[first, last]`` by tick, for the models replayed.

    The planner writes ``approved``, ``rejected`` and ``expired`` decisions only
    as ``awaiting_approval``: a person or the deadline changed them later.
    """
    found: dict[datetime, list[Outcome]] = {}
    awaiting = DecisionStatus.awaiting_approval.value
    for row_id, raw_tick, model_id, policy, action, status, reason in queries.tick_decision_rows(session, first, last):
        name = names.get(model_id)
        if name is None:
            continue
        at = ticks.get(raw_tick)
        if at is None:
            at = ticks[raw_tick] = ensure_utc(raw_tick if isinstance(raw_tick, datetime)
                                              else datetime.fromisoformat(str(raw_tick)))
        found.setdefault(at, []).append(Outcome(name, policy, action, awaiting, reason or "", str(row_id), status)
                                        if status in _ANSWERED else
                                        Outcome(name, policy, action, status, reason or "", str(row_id)))
    return found
