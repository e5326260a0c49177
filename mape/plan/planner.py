"""The planner: one tick's decisions for the whole fleet, from policies and the knowledge base.

What it does: each pass first expires the ``awaiting_approval`` decisions
whose deadline (``expires_at``, set from the policy's ``approval_timeout``)
has come (:func:`knowledge.queries.expire_decisions`). Then, for every
managed model, :meth:`Planner.plan` takes the policies whose selector matches
(and whose mode is not ``off``; a mode an admin set in the knowledge base
overrides the file's: :mod:`mape.plan.modes`), evaluates ``when`` and ``unless`` against the
model's context (:func:`mape.plan.context.build_context`), applies ``for`` and
``keep_firing_for`` (:mod:`mape.plan.firing`, state kept in the knowledge
base), ranks the firing policies, and writes one
:class:`knowledge.tables.Decision` per firing policy, whose status and reason
:func:`mape.plan.rules.decide` gives in the documented order: paused,
dry-run, busy, cooldown, ``never_with``, rate limit, outranked, approval, the
fleet-wide blast radius, else proposed.

Each pass reads the fleet in a fixed number of queries (contexts:
:func:`mape.plan.context.build_contexts`; recent decisions, runs in flight,
pauses and policy state: :func:`mape.plan.ledger.read_ledger`) and writes its
decisions in two flushes, so its cost grows with the number of decisions, not
with queries per model and policy.

So at most one acting decision (proposed or awaiting approval) exists per
model per tick. Ranking: ``priority`` descending, then the safety order of
action types (:data:`DEFAULT_SAFETY_ORDER`: a rollback, which restores a
known-good state, before a retrain; types not listed after all listed ones),
then the policy name.

Decisions are keyed ``<model>/<policy>/<tick time>``: planning the same tick
again adds no rows and reports the stored ones. A condition that cannot be
evaluated (a missing signal, a type error) does not hold and is reported in
:attr:`PlanReport.errors`; an ``unless`` that cannot be evaluated holds the
policy back (a guard we cannot check is no reason to act). Nothing about a
policy or a context raises out of :meth:`Planner.plan`; database errors do.

Who calls it: the controller, once per tick, inside the tick's session (it
commits); tests.
"""

from __future__ import annotations

import fnmatch
import logging
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import lru_cache
from typing import Any

import cel
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlmodel import Session

from knowledge import audit, policy_modes, queries
from knowledge.tables import (
    ActionRun,
    ActionState,
    Decision,
    DecisionStatus,
    ManagedModel,
    PolicyModeOverride,
    PolicyState,
)
from mape._util.timeutil import ensure_utc, format_duration
from mape.config import BlastRadius, Utility
from mape.errors import PolicyError
from mape.plan import firing, modes
from mape.plan.context import build_context, build_contexts
from mape.plan.expressions import Condition, ConditionError, prepare
from mape.plan.forecast_guard import ForecastGuard
from mape.plan.ledger import ACTING_STATUSES, Draft, PlanLedger, read_ledger
from mape.plan.loader import LoadedPolicy
from mape.plan.policy import ActionSpec
from mape.plan.rules import BLAST_RADIUS_REASON, Ruling, blast_limit, decide, lookback
from mape.plan.scheduling.deferral import Forecast, choose_start, reconsider
from mape.plan.scheduling.recent_error import Evidence

logger = logging.getLogger(__name__)

#: Action types in the order they win a priority tie: restoring a known-good state before changing it.
DEFAULT_SAFETY_ORDER: tuple[str, ...] = ("rollback", "retrain")


@dataclass(frozen=True)
class EvaluationError:
    """A condition of a policy could not be evaluated for a model; the policy did not fire.

    Parameters
    ----------
    policy : str
        Policy name.
    model : str
        Model name.
    field : str
        ``spec.when``, ``spec.unless`` or ``context``.
    message : str
        What went wrong.
    missing : bool
        True when a signal was not available (the common, benign case).
    """

    policy: str
    model: str
    field: str
    message: str
    missing: bool = False

    def __str__(self) -> str:
        return f"policy {self.policy} on model {self.model}: {self.field}: {self.message}; not firing"


@dataclass(frozen=True)
class Choice:
    """The action a policy with ``alternatives`` takes this time, and how every candidate scored.

    Parameters
    ----------
    action : ActionSpec
        The chosen candidate's action.
    scores : list of dict
        Per candidate, in the policy's order (``spec.action`` first): action,
        params, effects, utility, whether it was eligible (its ``when`` held),
        and ``chosen: true`` on the one taken. Stored in the decision's evidence.
    weights : dict of str to float
        The utility weights used.
    """

    action: ActionSpec
    scores: list[dict[str, Any]]
    weights: dict[str, float]


@dataclass
class PlanReport:
    """What one :meth:`Planner.plan` call decided.

    Parameters
    ----------
    at : datetime
        The tick's logical time.
    decisions : dict of str to list of Decision
        By model name, in rank order; models with no firing policy have an
        empty list. On a repeated tick these are the rows stored the first time.
    errors : list of EvaluationError
        Conditions that could not be evaluated, for the log.
    created : int
        How many decision rows this call inserted (0 on a repeated tick).
    pending : dict of str to list of str
        By model name, the policies whose condition holds but whose ``for``
        has not yet passed.
    expired : list of Decision
        Decisions this call expired (awaiting approval past their deadline).
    cancelled : list of ActionRun
        Deferred runs this call cancelled because their policy stopped firing.
    rescheduled : list of ActionRun
        Deferred runs this call moved to another start because the forecast changed.
    """

    at: datetime
    decisions: dict[str, list[Decision]] = field(default_factory=dict)
    errors: list[EvaluationError] = field(default_factory=list)
    created: int = 0
    pending: dict[str, list[str]] = field(default_factory=dict)
    expired: list[Decision] = field(default_factory=list)
    cancelled: list[ActionRun] = field(default_factory=list)
    rescheduled: list[ActionRun] = field(default_factory=list)

    @property
    def all_decisions(self) -> list[Decision]:
        return [d for rows in self.decisions.values() for d in rows]

    def acting(self) -> list[Decision]:
        """Decisions the execute stage or a person will act on (proposed or awaiting approval)."""
        return [d for d in self.all_decisions if d.status in ACTING_STATUSES]

    def as_dict(self) -> dict[str, Any]:
        """A JSON-serialisable summary for the tick report: decisions by model, errors as log sentences."""
        return {
            "at": self.at.isoformat(),
            "created": self.created,
            "decisions": {
                model: [{"id": d.id, "policy": d.policy_name, "action": d.action, "status": d.status,
                         "reason": d.reason} for d in rows]
                for model, rows in self.decisions.items()
            },
            "errors": [str(e) for e in self.errors],
            "pending": {model: list(names) for model, names in self.pending.items() if names},
            "expired": [d.id for d in self.expired],
            "cancelled": [r.id for r in self.cancelled],
            "rescheduled": [r.id for r in self.rescheduled],
        }

    def __str__(self) -> str:
        counts: dict[str, int] = {}
        for decision in self.all_decisions:
            counts[decision.status] = counts.get(decision.status, 0) + 1
        detail = ", ".join(f"{n} {s}" for s, n in sorted(counts.items())) or "no decisions"
        models = len(self.decisions)
        return (f"plan at {self.at.isoformat()}: {models} model{'' if models == 1 else 's'}, {detail}, "
                f"{len(self.errors)} evaluation error{'' if len(self.errors) == 1 else 's'}")


def selects(policy: LoadedPolicy, model: ManagedModel) -> bool:
    """Whether the policy's selector matches the model: a name glob matches and every label is equal."""
    selector = policy.policy.spec.selector
    labels = model.labels or {}
    if not all(labels.get(key) == value for key, value in selector.labels.items()):
        return False
    return _name_matcher(tuple(selector.models))(model.name) is not None


@lru_cache(maxsize=4096)
def _name_matcher(patterns: tuple[str, ...]) -> Callable[[str], re.Match[str] | None]:
    """One compiled regular expression for a selector's name globs (``fnmatchcase`` semantics)."""
    return re.compile("|".join(f"(?:{fnmatch.translate(p)})" for p in patterns) or "(?!)").match


class Planner:
    """Decides, each tick, which policies fire for which models and what becomes of them.

    Parameters
    ----------
    policies : sequence of LoadedPolicy
        The loaded policy library (:func:`mape.plan.loader.load_policies`).
    actor : str
        Recorded as the decisions' actor, e.g. the controller id.
    safety_order : sequence of str
        Action types in the order they win priority ties; others come after.
    max_age : timedelta, optional
        Staleness bound of signals, passed to :func:`~mape.plan.context.build_context`.
    blast_radius : BlastRadius, optional
        Fleet-wide limit on models acted on automatically per period
        (``plan.blast_radius`` in the settings); past it decisions wait for a person.
    utility : Utility, optional
        Default weights of the quality dimensions for policies with
        ``alternatives`` (``plan.utility`` in the settings).
    forecast : callable, optional
        ``forecast(series, start, end)``: the forecast steps of ``carbon``
        (gCO2/kWh) or ``price`` (:data:`mape.plan.scheduling.deferral.Forecast`).
        With it, a deferred action starts in the window of ``defer.duration``
        with the lowest forecast inside ``[earliest, deadline]``, and a waiting
        one moves when the forecast changes materially; without it, deferred
        actions start at ``earliest``. With it, each pass also records and
        scores the shadow searches that measure the forecaster's recent error
        (:class:`~mape.plan.forecast_guard.ForecastGuard`, ``defer.guard``).

    Raises
    ------
    PolicyError
        When two policies share a name (naming both sources).

    Examples
    --------
    >>> planner = Planner([], actor="controller")
    >>> planner.policies
    ()
    """

    def __init__(self, policies: Sequence[LoadedPolicy], *, actor: str = "controller",
                 safety_order: Sequence[str] = DEFAULT_SAFETY_ORDER, max_age: timedelta | None = None,
                 blast_radius: BlastRadius | None = None, utility: Utility | None = None,
                 forecast: Forecast | None = None) -> None:
        self.policies = tuple(policies)
        self.forecast = forecast
        self._forecasts: dict[Any, Any] = {}  # the forecasts fetched in one planning pass
        self._forecast_guard = ForecastGuard()
        self._evidence: dict[str, Evidence] = {}  # the forecaster's scored shadow searches, by kind, in one pass
        self.utility = utility or Utility()
        self._guards: dict[str, Condition | ConditionError] = {}
        self.actor = actor
        self.safety_order = tuple(safety_order)
        self.max_age = max_age
        self.blast_radius = blast_radius
        self._lookback = lookback(list(self.policies), blast_radius)
        self._selection: dict[tuple[str, tuple[tuple[str, Any], ...]], tuple[LoadedPolicy, ...]] = {}
        # the policies in the modes people set in the knowledge base (mape policy mode), refreshed each pass
        self._overrides: dict[str, dict[str, str]] = {}  # by policy: mode, set_by, set_at, reason (the evidence)
        self._in_effect: tuple[LoadedPolicy, ...] = self.policies
        self._stateful = [p.name for p in self.policies if p.stateful]
        seen: dict[str, LoadedPolicy] = {}
        for policy in self.policies:
            if policy.name in seen:
                raise PolicyError(f"duplicate policy name {policy.name!r}: also defined in {seen[policy.name].source}",
                                  source=policy.source, field="metadata.name")
            seen[policy.name] = policy

    def _use_overrides(self, overrides: dict[str, PolicyModeOverride]) -> None:
        """Plan each overridden policy in its override's mode (:mod:`mape.plan.modes`) from now on."""
        wanted = {name: row.mode for name, row in overrides.items()}
        if wanted != {name: row["mode"] for name, row in self._overrides.items()}:
            self._in_effect = modes.in_effect(self.policies, wanted)
            self._selection.clear()
        self._overrides = {name: {"mode": row.mode, "set_by": row.set_by, "set_at": ensure_utc(row.set_at).isoformat(),
                                  "reason": row.reason} for name, row in overrides.items()}

    def _selected(self, model: ManagedModel) -> list[LoadedPolicy]:
        """The policies (not ``off``, overrides applied) whose selector matches the model; remembered by name and
        labels."""
        key = (model.name, tuple(sorted((model.labels or {}).items())))
        hit = self._selection.get(key)
        if hit is None:
            if len(self._selection) > 100_000:
                self._selection.clear()
            hit = self._selection[key] = tuple(p for p in self._in_effect
                                               if p.policy.spec.mode != "off" and selects(p, model))
        return list(hit)

    def rank(self, policy: LoadedPolicy, action: str | None = None) -> tuple[int, int, str]:
        """Sort key: priority descending, then the safety order of the action type, then the name.

        ``action`` is the action type the policy takes this time (an alternative's), default ``spec.action``.
        """
        action = action or policy.action
        safety = self.safety_order.index(action) if action in self.safety_order else len(self.safety_order)
        return (-policy.policy.spec.priority, safety, policy.name)

    # ------------------------------------------------------------------ evaluation

    @staticmethod
    def _holds(condition: Condition, context: cel.Context, policy: LoadedPolicy, model: ManagedModel,
               field_path: str, errors: list[EvaluationError]) -> bool | None:
        """The condition's value, or None (reported) when it cannot be evaluated."""
        try:
            return condition.evaluate(context)
        except ConditionError as exc:
            errors.append(EvaluationError(policy=policy.name, model=model.name, field=field_path,
                                          message=str(exc), missing=exc.missing))
            return None

    def _condition(self, policy: LoadedPolicy, context: cel.Context, model: ManagedModel,
                   errors: list[EvaluationError]) -> bool | None:
        """Whether ``when`` is true and ``unless`` is not; None when either cannot be evaluated."""
        when = self._holds(policy.when, context, policy, model, "spec.when", errors)
        if when is not True:
            return when
        if policy.unless is None:
            return True
        # An unless that cannot be evaluated holds the policy back: an unchecked guard is no reason to act.
        unless = self._holds(policy.unless, context, policy, model, "spec.unless", errors)
        return None if unless is None else not unless

    @staticmethod
    def _fires(ledger: PlanLedger, policy: LoadedPolicy, model: ManagedModel, at: datetime,
               holds: bool | None) -> tuple[bool, PolicyState | None, bool]:
        """Whether the policy fires after ``for`` and ``keep_firing_for``; its state row; whether that changed."""
        if not policy.stateful:
            return holds is True, None, False
        spec = policy.policy.spec
        assert model.id is not None
        key = (model.id, policy.name)
        state = ledger.states.get(key)
        if state is None:
            if holds is not True:
                return False, None, False  # nothing pending, nothing to remember
            # never evaluated before: an updated_at just before this tick, so this evaluation is not a replay
            state = PolicyState(model_id=model.id, policy_name=policy.name, updated_at=at - timedelta(microseconds=1))
            ledger.states[key] = state
        if firing.is_replay(state, at):
            return state.firing_since is not None, state, False
        fires = firing.advance(state, at, holds, for_=spec.for_, keep_firing_for=spec.keep_firing_for)
        return fires, state, True

    @staticmethod
    def _save_states(session: Session, ledger: PlanLedger, changed: list[PolicyState]) -> set[tuple[int, str]]:
        """Store the changed state rows in one flush; the keys whose row another controller stored first."""
        new = {id(state) for state in changed if state.id is None}
        try:
            with session.begin_nested():
                session.add_all(changed)
                session.flush()
            return set()
        except IntegrityError:
            # another controller stored one of these rows first: fall through and save them one by one
            logger.info("Policy state rows raced with another controller; saving them one by one")
        lost: set[tuple[int, str]] = set()
        for state in changed:  # one by one: the rows other controllers stored win
            if id(state) in new:  # a row never stored: a fresh copy, out of the rolled-back savepoint
                state = PolicyState.model_validate(state.model_dump(exclude={"id"}))
            stored, saved = queries.save_policy_state(session, state)
            if not saved:
                key = (stored.model_id, stored.policy_name)
                ledger.states[key] = stored
                lost.add(key)
        return lost

    # ------------------------------------------------------------------ planning

    def plan(self, session: Session, models: Sequence[ManagedModel], at: datetime) -> PlanReport:
        """Evaluate every policy for every model at ``at`` and write the decisions.

        Parameters
        ----------
        session : Session
            Open session on the knowledge base; decisions are flushed, the
            caller commits.
        models : sequence of ManagedModel
            Stored managed models to plan for.
        at : datetime
            The tick's logical time (aware UTC): decisions' ``tick_at`` and
            ``created_at``, and the time the context is read as of.

        Returns
        -------
        PlanReport
            Decisions by model and evaluation errors.
        """
        at = ensure_utc(at)
        report = PlanReport(at=at)
        report.expired = queries.expire_decisions(session, at, actor=self.actor)
        for decision in report.expired:
            logger.info("%s expired: nobody approved it by %s", decision,
                        ensure_utc(decision.expires_at).isoformat() if decision.expires_at else "its deadline")
        self._use_overrides(policy_modes.overrides(session))
        candidates: dict[str, list[LoadedPolicy]] = {}
        for model in models:
            selected = self._selected(model)
            if selected and model.id is None:
                report.errors.append(EvaluationError(policy="*", model=model.name, field="context",
                                                     message="the model is not stored in the knowledge base"))
            elif selected:
                candidates[model.name] = selected
        planned = [m for m in models if m.name in candidates]
        self._forecasts = {}
        contexts = self._contexts(session, planned, at, report)
        ledger = read_ledger(session, [m.id for m in planned if m.id is not None], at, lookback=self._lookback,
                             policy_names=self._stateful)
        fired, choices = self._evaluate(session, ledger, planned, contexts, candidates, at, report)
        if self.forecast is not None:
            self._evidence = self._forecast_guard.update(
                session, at, [p.policy.spec.defer for p in self.policies if p.policy.spec.defer is not None],
                self.forecast, model_ids=[m.id for m in models if m.id is not None], cache=self._forecasts)
            self._replan_deferred(session, ledger, at, report)
        self._decide(session, ledger, models, contexts, fired, choices, at, report)
        logger.debug("%s", report)
        return report

    def _evaluate(self, session: Session, ledger: PlanLedger, models: list[ManagedModel],
                  contexts: dict[str, dict[str, Any]], candidates: dict[str, list[LoadedPolicy]], at: datetime,
                  report: PlanReport) -> tuple[dict[str, list[LoadedPolicy]], dict[tuple[str, str], Choice]]:
        """Which policies fire for which model, in rank order, and the alternatives chosen; advances ``for`` state."""
        fires: dict[str, dict[str, bool]] = {}
        held: dict[tuple[int | None, str], bool | None] = {}
        changed: list[PolicyState] = []
        for model in models:
            context = contexts.get(model.name)
            if context is None:
                continue
            try:
                prepared = prepare(context)  # converted to CEL values once, for every policy of this model
            except Exception as exc:  # noqa: BLE001 - a value CEL cannot hold skips this model, never the fleet
                report.errors.append(EvaluationError(policy="*", model=model.name, field="context",
                                                     message=f"cannot convert the context: {type(exc).__name__}: {exc}"))
                continue
            verdicts = fires.setdefault(model.name, {})
            model_id, errors = model.id, report.errors
            for policy in candidates[model.name]:
                holds = held[(model_id, policy.name)] = self._condition(policy, prepared, model, errors)
                if not policy.stateful:  # the common case, without a state row: fires when the condition holds
                    verdicts[policy.name] = holds is True
                    continue
                verdicts[policy.name], state, was_changed = self._fires(ledger, policy, model, at, holds)
                if was_changed and state is not None:
                    changed.append(state)
        by_id = {m.id: m.name for m in models}
        for model_id, policy_name in self._save_states(session, ledger, changed) if changed else ():
            # another controller evaluated this policy for this model first: its answer counts
            fires[by_id[model_id]][policy_name] = ledger.states[(model_id, policy_name)].firing_since is not None
        self._cancel_cleared(session, ledger, {m.id: m for m in models}, fires, held, at, report)
        choices: dict[tuple[str, str], Choice] = {}
        result: dict[str, list[LoadedPolicy]] = {}
        states = ledger.states
        for model in models:
            name, model_id = model.name, model.id
            verdicts = fires.get(name, {})
            firing_now = []
            for policy in candidates[name]:
                if verdicts.get(policy.name):
                    firing_now.append(policy)
                elif policy.stateful and model_id is not None:
                    state = states.get((model_id, policy.name))
                    if state is not None and state.pending_since is not None:
                        report.pending.setdefault(name, []).append(policy.name)
            for policy in firing_now:
                if policy.policy.spec.alternatives:
                    choices[(name, policy.name)] = self._choose(policy, model, contexts[name], report)
            result[name] = sorted(firing_now, key=lambda p, m=name: self.rank(
                p, choices[(m, p.name)].action.type if (m, p.name) in choices else None))
        return result, choices

    def _guard(self, expression: str) -> Condition | ConditionError:
        """An alternative's ``when``, compiled once (a compile error is kept and reported on use)."""
        guard = self._guards.get(expression)
        if guard is None:
            try:
                guard = Condition(expression)
            except ConditionError as exc:
                guard = exc
            self._guards[expression] = guard
        return guard

    def _choose(self, policy: LoadedPolicy, model: ManagedModel, context: dict[str, Any],
                report: PlanReport) -> Choice:
        """The candidate action with the highest utility: ``spec.action`` or an alternative whose guard holds."""
        spec = policy.policy.spec
        weights = spec.utility if spec.utility is not None else self.utility.weights
        prepared: cel.Context | None = None
        scored: list[dict[str, Any]] = []
        best: tuple[float, int] | None = None
        options = [(spec.action, spec.effects, None), *((a.action, a.effects, a.when) for a in spec.alternatives)]
        for index, (action, effects, when) in enumerate(options):
            eligible: bool | None = True
            if when is not None:
                guard = self._guard(when)
                if isinstance(guard, ConditionError):
                    eligible = None
                    report.errors.append(EvaluationError(policy=policy.name, model=model.name,
                                                         field=f"spec.alternatives[{index - 1}].when",
                                                         message=str(guard)))
                else:
                    prepared = prepared if prepared is not None else prepare(context)
                    eligible = self._holds(guard, prepared, policy, model, f"spec.alternatives[{index - 1}].when",
                                           report.errors)
            utility = sum(weights.get(dimension, 0.0) * effect for dimension, effect in effects.items())
            scored.append({"action": action.type, "params": dict(action.params), "effects": dict(effects),
                           "utility": round(utility, 12), "eligible": eligible is True})
            if eligible is True and (best is None or utility > best[0]):
                best = (utility, index)
        chosen = best[1] if best is not None else 0  # no eligible alternative: spec.action, the default
        scored[chosen]["chosen"] = True
        return Choice(action=options[chosen][0], scores=scored, weights=dict(weights))

    def _cancel_cleared(self, session: Session, ledger: PlanLedger, models: dict[int | None, ManagedModel],
                        fires: dict[str, dict[str, bool]], held: dict[tuple[int | None, str], bool | None],
                        at: datetime, report: PlanReport) -> None:
        """Cancel deferred runs whose policy stopped firing for their model before they started.

        Only a condition evaluated as false clears a deferral: one that cannot
        be evaluated (a missing signal) leaves the run waiting, and so does a
        policy kept firing by ``keep_firing_for``.
        """
        by_name = {p.name: p for p in self.policies}
        for run, decision in ledger.deferred:
            model = models.get(run.model_id)
            policy = by_name.get(decision.policy_name)
            if model is None or policy is None or decision.follows_run_id is not None:
                continue
            defer = policy.policy.spec.defer
            if defer is None or not defer.cancel_when_cleared:
                continue
            if held.get((model.id, policy.name)) is not False or fires.get(model.name, {}).get(policy.name):
                continue
            reason = (f"cancelled before it started: policy {policy.name} no longer fires for {model} at "
                      f"{at.isoformat()}")
            if queries.cancel_scheduled_run(session, run, at, actor=self.actor, reason=reason):
                ledger.release(run)
                report.cancelled.append(run)
                logger.info("%s %s", run, reason)

    def _replan_deferred(self, session: Session, ledger: PlanLedger, at: datetime, report: PlanReport) -> None:
        """Move waiting deferred runs when a fresh forecast promises a start ``defer.replan_saving`` better.

        Only runs whose decision chose its start on a forecast
        (``evidence.schedule``) are reconsidered; the deadline stays.
        """
        by_name = {p.name: p for p in self.policies}
        for run, decision in ledger.deferred:
            policy = by_name.get(decision.policy_name)
            defer = policy.policy.spec.defer if policy is not None else None
            schedule = (decision.evidence or {}).get("schedule")
            if (defer is None or not isinstance(schedule, dict) or run.state != ActionState.scheduled.value
                    or run.scheduled_for is None or decision.deadline is None):
                continue
            assert self.forecast is not None
            better = reconsider(planned=ensure_utc(run.scheduled_for), now=at,
                                latest_start=ensure_utc(decision.deadline), duration=defer.duration,
                                weights=defer.weights, forecast=self.forecast, replan_saving=defer.replan_saving,
                                cache=self._forecasts, guard=defer.guard,
                                evidence=self._evidence.get(ForecastGuard.key(defer)))
            if better is None:
                continue
            if queries.reschedule_run(session, run, better.start, at, actor=self.actor, reason=better.reason,
                                      payload={"schedule": better.record}):
                report.rescheduled.append(run)
                logger.info("%s rescheduled: %s", run, better.reason)

    def _schedule(self, defer: Any, earliest: datetime, latest: datetime) -> tuple[datetime, dict[str, Any]]:
        """The start of a deferred action in ``[earliest, latest]``, and the record of how it was chosen."""
        chosen = choose_start(earliest=earliest, latest_start=latest, duration=defer.duration, weights=defer.weights,
                              forecast=self.forecast, min_saving=defer.min_saving, cache=self._forecasts,
                              guard=defer.guard, evidence=self._evidence.get(ForecastGuard.key(defer)))
        return chosen.start, chosen.record

    def _decide(self, session: Session, ledger: PlanLedger, models: Sequence[ManagedModel],
                contexts: dict[str, dict[str, Any]], fired: dict[str, list[LoadedPolicy]],
                choices: dict[tuple[str, str], Choice], at: datetime, report: PlanReport) -> None:
        """Give every firing policy its decision (:func:`mape.plan.rules.decide`) and store them in two inserts."""
        used = {p.name: p for rows in fired.values() for p in rows}
        if used:
            queries.record_policy_versions(
                session, [(p.name, p.text, p.source, p.policy.metadata.owner) for p in used.values()],
                actor=self.actor)
        fleet_size = len(models)
        drafts: dict[str, list[Decision | Draft]] = {}
        first: list[Draft] = []
        outranked: list[tuple[Draft, Decision | Draft, ManagedModel]] = []  # the loser's reason names the winner
        for model in models:
            firing_policies = fired.get(model.name, [])
            rows: list[Decision | Draft] = []
            drafts[model.name] = rows
            if not firing_policies:
                continue
            assert model.id is not None
            at_tick = ledger.at_tick.get(model.id, ())
            # verification's follow-ups carry the policy's name but are not its own decision of this tick
            stored = {d.policy_name: d for d in at_tick if d.follows_run_id is None}
            winner: Decision | Draft | None = next((d for d in at_tick if d.status in ACTING_STATUSES), None)
            for policy in firing_policies:
                if policy.name in stored:  # a repeated tick: the stored decision stands
                    rows.append(stored[policy.name])
                    continue
                choice = choices.get((model.name, policy.name))
                verdict = decide(policy, model, at, ledger, winner, blast=self.blast_radius, fleet_size=fleet_size,
                                 action=choice.action.type if choice is not None else None)
                draft = self._draft(policy, model, at, verdict, contexts[model.name], ledger, choice)
                rows.append(draft)
                if winner is not None and verdict.reason.startswith("outranked"):
                    outranked.append((draft, winner, model))
                else:
                    first.append(draft)
                if winner is None and draft.status in ACTING_STATUSES:
                    winner = draft
                ledger.record(draft)
        stored_rows: dict[int, Decision] = {}
        created: set[int] = set()
        self._store(session, first, stored_rows, created)
        for loser, winner, model in outranked:
            winner_id = stored_rows[id(winner)].id if id(winner) in stored_rows else winner.id
            loser.reason = (f"outranked: policy {winner.policy_name} ({winner.action}, decision {winner_id}) "
                            f"acts on {model} in this tick")
        self._store(session, [loser for loser, _, _ in outranked], stored_rows, created)
        report.created += len(created)
        held: list[int] = []
        for name, rows in drafts.items():
            decisions: list[Decision] = []
            for row in rows:
                decision = stored_rows[id(row)] if isinstance(row, Draft) else row
                decisions.append(decision)
                if id(row) in created:
                    logger.info("%s for model %s: %s", decision, name, decision.reason or decision.status)
                    if decision.reason.startswith(BLAST_RADIUS_REASON) and decision.id is not None:
                        held.append(decision.id)
            report.decisions[name] = decisions
        if held and self.blast_radius is not None:
            audit.record(session, actor=self.actor, kind="plan.blast_radius", subject="fleet", time=at,
                         payload={"limit": blast_limit(self.blast_radius, fleet_size), "fleet": fleet_size,
                                  "per": format_duration(self.blast_radius.per), "held": held})

    @staticmethod
    def _store(session: Session, drafts: list[Draft], stored_rows: dict[int, Decision], created: set[int]) -> None:
        rows, new = queries.add_decisions(session, [draft.values() for draft in drafts])
        for draft, row, is_new in zip(drafts, rows, new):
            stored_rows[id(draft)] = row
            draft.id = row.id
            if is_new:
                created.add(id(draft))

    def _draft(self, policy: LoadedPolicy, model: ManagedModel, at: datetime, verdict: Ruling,
               context: dict[str, Any], ledger: PlanLedger, choice: Choice | None = None) -> Draft:
        spec = policy.policy.spec
        action = choice.action if choice is not None else spec.action
        evidence: dict[str, Any] = {"when": spec.when, "unless": spec.unless, "mode": spec.mode,
                                    "source": policy.source, "context": context}
        if choice is not None:
            evidence["alternatives"] = {"weights": choice.weights, "candidates": choice.scores}
        override = self._overrides.get(policy.name)
        reason = verdict.reason
        if override is not None:
            evidence["mode_override"] = dict(override)
            if verdict.status == DecisionStatus.dry_run.value:
                reason = (f"{reason} (mode set to {override['mode']} by {override['set_by']} at "
                          f"{override['set_at']}: {override['reason']})")
        assert model.id is not None
        state = ledger.states.get((model.id, policy.name))
        if state is not None:
            evidence["firing"] = {
                "for": format_duration(spec.for_), "keep_firing_for": format_duration(spec.keep_firing_for),
                **{key: ensure_utc(value).isoformat() if value is not None else None
                   for key, value in (("pending_since", state.pending_since), ("firing_since", state.firing_since),
                                      ("last_true_at", state.last_true_at))},
            }
        expires_at = None
        if verdict.status == DecisionStatus.awaiting_approval.value and spec.approval_timeout > timedelta(0):
            expires_at = at + spec.approval_timeout
        not_before = deadline = None
        if spec.defer is not None and verdict.status in ACTING_STATUSES:
            not_before, deadline = at + spec.defer.earliest, at + spec.defer.deadline
            if self.forecast is not None:
                not_before, evidence["schedule"] = self._schedule(spec.defer, not_before, deadline)
        return Draft(
            created_at=at, tick_at=at, model_id=model.id, policy_name=policy.name, policy_sha256=policy.sha256,
            action=action.type, params=dict(action.params), priority=spec.priority, actor=self.actor,
            status=verdict.status, reason=reason, dedup_key=f"{at.isoformat()}/{model.name}/{policy.name}",
            evidence=evidence, expires_at=expires_at, not_before=not_before, deadline=deadline,
        )

    def _contexts(self, session: Session, models: list[ManagedModel], at: datetime,
                  report: PlanReport) -> dict[str, dict[str, Any]]:
        """Every model's context, read fleet-wide in a few queries; model by model if that fails."""
        try:
            by_id = build_contexts(session, models, at, max_age=self.max_age)
            return {m.name: by_id[m.id] for m in models if m.id is not None}
        except SQLAlchemyError:
            raise
        except Exception:  # noqa: BLE001 - find the model whose context breaks, and skip only that one
            logger.warning("Building contexts fleet-wide failed; building them model by model", exc_info=True)
        contexts: dict[str, dict[str, Any]] = {}
        for model in models:
            try:
                contexts[model.name] = build_context(session, model, at, max_age=self.max_age)
            except SQLAlchemyError:
                raise
            except Exception as exc:  # noqa: BLE001 - a bad context skips this model, never the tick
                report.errors.append(EvaluationError(
                    policy="*", model=model.name, field="context",
                    message=f"cannot build the context: {type(exc).__name__}: {exc}"))
        return contexts

