"""The planner: one tick's decisions for the whole fleet, from policies and the knowledge base.

What it does: each pass first expires the ``awaiting_approval`` decisions
whose deadline (``expires_at``, set from the policy's ``approval_timeout``)
has come (:func:`knowledge.queries.expire_decisions`). Then, for every
managed model, :meth:`Planner.plan` takes the policies whose selector matches
(and whose mode is not ``off``), evaluates ``when`` and ``unless`` against the
model's context (:func:`mape.plan.context.build_context`), applies ``for`` and
``keep_firing_for`` (:mod:`mape.plan.firing`, state kept in the knowledge
base), ranks the firing policies, and writes one
:class:`knowledge.tables.Decision` per firing policy. The status of each
decision is decided in this order:

1. the policy or the model is paused (``mape pause``) → ``suppressed`` (paused,
   naming who paused it, when and why);
2. ``mode: dry-run`` → ``dry_run`` (recorded, never acted on, blocks nothing);
3. an action run of this model is in flight → ``suppressed`` (busy);
4. the last acting decision of the same action for this model lies within the
   policy's ``cooldown`` → ``suppressed`` (cooldown);
5. the policy already made ``rate_limit.max`` acting decisions for this model
   within ``rate_limit.per`` → ``suppressed`` (rate limit);
6. a higher-ranked policy already acts on this model in this tick →
   ``suppressed`` (outranked, naming the winner);
7. ``approval: required`` → ``awaiting_approval`` (with ``expires_at``), else
   ``proposed``.

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

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from fnmatch import fnmatchcase
from typing import Any

import cel
from sqlalchemy.exc import SQLAlchemyError
from sqlmodel import Session

from knowledge import queries
from knowledge.tables import ActionRun, Decision, DecisionStatus, ManagedModel, Pause, PauseScope, PolicyState
from mape._util.timeutil import ensure_utc, format_duration
from mape.errors import PolicyError
from mape.plan import firing
from mape.plan.context import build_context, build_contexts
from mape.plan.expressions import Condition, ConditionError, prepare
from mape.plan.loader import LoadedPolicy

logger = logging.getLogger(__name__)

#: Action types in the order they win a priority tie: restoring a known-good state before changing it.
DEFAULT_SAFETY_ORDER: tuple[str, ...] = ("rollback", "retrain")

ACTING_STATUSES = (DecisionStatus.proposed.value, DecisionStatus.awaiting_approval.value,
                   DecisionStatus.approved.value)


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
    """

    at: datetime
    decisions: dict[str, list[Decision]] = field(default_factory=dict)
    errors: list[EvaluationError] = field(default_factory=list)
    created: int = 0
    pending: dict[str, list[str]] = field(default_factory=dict)
    expired: list[Decision] = field(default_factory=list)

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
    if not any(fnmatchcase(model.name, pattern) for pattern in selector.models):
        return False
    labels = model.labels or {}
    return all(labels.get(key) == value for key, value in selector.labels.items())


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
                 safety_order: Sequence[str] = DEFAULT_SAFETY_ORDER, max_age: timedelta | None = None) -> None:
        self.policies = tuple(policies)
        self.actor = actor
        self.safety_order = tuple(safety_order)
        self.max_age = max_age
        seen: dict[str, LoadedPolicy] = {}
        for policy in self.policies:
            if policy.name in seen:
                raise PolicyError(f"duplicate policy name {policy.name!r}: also defined in {seen[policy.name].source}",
                                  source=policy.source, field="metadata.name")
            seen[policy.name] = policy

    def rank(self, policy: LoadedPolicy) -> tuple[int, int, str]:
        """Sort key: priority descending, then the safety order of the action type, then the name."""
        action = policy.action
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
    def _fires(session: Session, policy: LoadedPolicy, model: ManagedModel, at: datetime,
               holds: bool | None) -> tuple[bool, PolicyState | None]:
        """Whether the policy fires, after ``for`` and ``keep_firing_for``; the state row when it has one."""
        spec = policy.policy.spec
        if not firing.tracks_state(spec.for_, spec.keep_firing_for):
            return holds is True, None
        assert model.id is not None
        state = queries.policy_state(session, model.id, policy.name)
        if state is None:
            if holds is not True:
                return False, None  # nothing pending, nothing to remember
            # never evaluated before: an updated_at just before this tick, so this evaluation is not a replay
            state = PolicyState(model_id=model.id, policy_name=policy.name, updated_at=at - timedelta(microseconds=1))
        if firing.is_replay(state, at):
            return state.firing_since is not None, state
        fires = firing.advance(state, at, holds, for_=spec.for_, keep_firing_for=spec.keep_firing_for)
        state, saved = queries.save_policy_state(session, state)
        if not saved:  # another controller evaluated this policy for this model first
            fires = state.firing_since is not None
        return fires, state

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
        pauses = {(p.scope, p.name): p for p in queries.pauses(session)}
        recorded: set[str] = set()
        candidates: dict[str, list[LoadedPolicy]] = {}
        for model in models:
            selected = [p for p in self.policies if p.policy.spec.mode != "off" and selects(p, model)]
            if selected and model.id is None:
                report.errors.append(EvaluationError(policy="*", model=model.name, field="context",
                                                     message="the model is not stored in the knowledge base"))
            elif selected:
                candidates[model.name] = selected
        contexts = self._contexts(session, [m for m in models if m.name in candidates], at, report)
        for model in models:
            context = contexts.get(model.name)
            report.decisions[model.name] = [] if context is None else self._plan_model(
                session, model, at, report, recorded, pauses, candidates[model.name], context)
        logger.debug("%s", report)
        return report

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

    def _plan_model(self, session: Session, model: ManagedModel, at: datetime, report: PlanReport,
                    recorded: set[str], pauses: dict[tuple[str, str], Pause], candidates: list[LoadedPolicy],
                    context: dict[str, Any]) -> list[Decision]:
        prepared = prepare(context)  # converted to CEL values once, for every policy of this model
        fired: list[LoadedPolicy] = []
        states: dict[str, PolicyState] = {}
        for policy in candidates:
            holds = self._condition(policy, prepared, model, report.errors)
            fires, state = self._fires(session, policy, model, at, holds)
            if state is not None:
                states[policy.name] = state
                if not fires and state.pending_since is not None:
                    report.pending.setdefault(model.name, []).append(policy.name)
            if fires:
                fired.append(policy)
        firing_policies = sorted(fired, key=self.rank)
        if not firing_policies:
            return []

        busy = queries.in_flight_actions(session, model.id)
        winner = self._tick_winner(session, model, at)
        rows: list[Decision] = []
        for policy in firing_policies:
            spec = policy.policy.spec
            status, reason = self._status(session, policy, model, at, busy, winner, pauses)
            if policy.name not in recorded:
                queries.record_policy_version(session, name=policy.name, text=policy.text, source=policy.source,
                                              author=policy.policy.metadata.owner, actor=self.actor)
                recorded.add(policy.name)
            evidence: dict[str, Any] = {"when": spec.when, "unless": spec.unless, "mode": spec.mode,
                                        "source": policy.source, "context": context}
            state = states.get(policy.name)
            if state is not None:
                evidence["firing"] = {
                    "for": format_duration(spec.for_), "keep_firing_for": format_duration(spec.keep_firing_for),
                    **{key: ensure_utc(value).isoformat() if value is not None else None
                       for key, value in (("pending_since", state.pending_since), ("firing_since", state.firing_since),
                                          ("last_true_at", state.last_true_at))},
                }
            expires_at = None
            if status == DecisionStatus.awaiting_approval.value and spec.approval_timeout > timedelta(0):
                expires_at = at + spec.approval_timeout
            decision = Decision(
                created_at=at, tick_at=at, model_id=model.id, policy_name=policy.name, policy_sha256=policy.sha256,
                action=spec.action.type, params=dict(spec.action.params), priority=spec.priority, actor=self.actor,
                status=status, reason=reason, dedup_key=f"{model.name}/{policy.name}/{at.isoformat()}",
                evidence=evidence, expires_at=expires_at,
            )
            stored, created = queries.add_decision(session, decision)
            report.created += int(created)
            if winner is None and stored.status in ACTING_STATUSES:
                winner = stored
            if created:
                logger.info("%s for %s: %s", stored, model, stored.reason or stored.status)
            rows.append(stored)
        return rows

    @staticmethod
    def _tick_winner(session: Session, model: ManagedModel, at: datetime) -> Decision | None:
        """An acting decision already stored for this model and tick (a repeated or resumed tick)."""
        for decision in queries.decisions(session, model_id=model.id, since=at):
            if decision.tick_at is not None and ensure_utc(decision.tick_at) == at \
                    and decision.status in ACTING_STATUSES:
                return decision
        return None

    def _status(self, session: Session, policy: LoadedPolicy, model: ManagedModel, at: datetime,
                busy: Sequence[ActionRun], winner: Decision | None,
                pauses: dict[tuple[str, str], Pause] | None = None) -> tuple[str, str]:
        spec = policy.policy.spec
        pauses = pauses or {}
        paused = pauses.get((PauseScope.policy.value, policy.name)) or pauses.get((PauseScope.model.value, model.name))
        if paused is not None:
            return (DecisionStatus.suppressed.value,
                    f"paused: {paused.scope} {paused.name} paused by {paused.paused_by} at "
                    f"{ensure_utc(paused.paused_at).isoformat()}: {paused.reason}")
        if spec.mode == "dry-run":
            return DecisionStatus.dry_run.value, "dry-run: recorded, not acted on"
        if busy:
            runs = ", ".join(str(run) for run in busy)
            return DecisionStatus.suppressed.value, f"busy: {runs} in flight for {model}"
        assert model.id is not None
        last = queries.last_action_decision(session, model.id, spec.action.type)
        if last is not None and spec.cooldown.total_seconds() > 0 and not self._same_tick(last, at):
            elapsed = at - ensure_utc(last.created_at)
            if elapsed < spec.cooldown:
                return (DecisionStatus.suppressed.value,
                        f"cooldown: last {spec.action.type} decision {last.id} at "
                        f"{ensure_utc(last.created_at).isoformat()}, cooldown {format_duration(spec.cooldown)}")
        if spec.rate_limit is not None:
            limit = spec.rate_limit
            count = queries.count_acting_decisions(session, model.id, policy.name, since=at - limit.per, until=at)
            if count >= limit.max:
                return (DecisionStatus.suppressed.value,
                        f"rate limit: {limit.max} {spec.action.type} decisions in the last {format_duration(limit.per)}")
        if winner is not None:
            return (DecisionStatus.suppressed.value,
                    f"outranked: policy {winner.policy_name} ({winner.action}, decision {winner.id}) "
                    f"acts on {model} in this tick")
        if spec.approval == "required":
            return DecisionStatus.awaiting_approval.value, "awaiting approval"
        return DecisionStatus.proposed.value, ""

    @staticmethod
    def _same_tick(decision: Decision, at: datetime) -> bool:
        return decision.tick_at is not None and ensure_utc(decision.tick_at) == at
