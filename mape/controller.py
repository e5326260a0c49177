"""One tick of the MAPE-K loop, and the long-lived state a controller keeps between ticks.

Who calls it: :mod:`flows.tick` (the Prefect flow behind ``mape tick`` and
``mape run``) and the tests. A tick is keyed by its logical time ``at``:
sensing, analysis, verification and planning run once per ``at`` (a
repeated tick — a Prefect retry, a restarted controller — skips them; each is
idempotent per ``at`` where a crashed tick runs again), while dispatching and
running pending actions is safe to repeat because the executor claims each
run atomically.

The stages are composed here once; :meth:`Controller.tick` takes a ``wrap``
function so the Prefect flow can turn each stage into a task without a
second copy of the sequence.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, Field
from sqlalchemy.engine import Engine
from sqlmodel import select

from knowledge import audit, queries, registry, retention
from knowledge.database import create_engine_for, session_scope
from knowledge.migrate import upgrade
from knowledge.tables import ActionRun, Decision, DecisionStatus, ManagedModel, Tick
from mape._util.timeutil import Clock, ensure_utc, utcnow
from mape.analyze.stage import Analyzer
from mape.config import Settings
from mape.execute import actions as _builtin_actions  # noqa: F401  (registers retrain, rollback and notify)
from mape.execute.canary import CanaryRollout
from mape.execute.production_serving import ProductionFollower
from mape.execute.executor import Executor
from mape.fleet import LeaseKeeper
from mape.execute.reconcile import FlowRuns, reconcile
from mape.execute.registry import ActionRegistry, default_registry
from mape.monitor.stage import Monitor
from mape.notify import deliver, enqueue_tick
from mape.plan.channels import check_channels
from mape.plan.loader import LoadedPolicy, load_policies
from mape.plan.planner import Planner
from mape.plan.verdicts import VerdictRecord
from mape.plan.verification import Verifier

log = logging.getLogger(__name__)
T = TypeVar("T")
Wrap = Callable[[str, Callable[..., T]], Callable[..., T]]


class DecisionSummary(BaseModel):
    id: int
    model: str
    policy: str
    action: str
    status: str
    reason: str = ""


class ActionSummary(BaseModel):
    id: int
    model: str
    action: str
    state: str
    result: dict[str, Any] = Field(default_factory=dict)
    message: str = ""


class TickReport(BaseModel):
    """What one tick saw and did; printed by ``mape tick`` and the demo's timeline."""

    at: datetime
    repeated: bool = False
    signals: dict[str, dict[str, Any]] = Field(default_factory=dict)
    opened: list[str] = Field(default_factory=list)
    closed: list[str] = Field(default_factory=list)
    decisions: list[DecisionSummary] = Field(default_factory=list)
    actions: list[ActionSummary] = Field(default_factory=list)
    errors: list[str] = Field(default_factory=list, description="Stage failures: a sensor, a stage or a dispatch broke.")
    warnings: list[str] = Field(default_factory=list, description="Policy conditions that could not be evaluated.")
    verdicts: list[VerdictRecord] = Field(default_factory=list, description="Verifications that ended in this tick.")
    pending: dict[str, list[str]] = Field(
        default_factory=dict, description="By model, policies whose condition holds but whose `for` has not passed.")
    expired: list[int] = Field(default_factory=list, description="Decisions that expired awaiting approval.")
    cancelled: list[int] = Field(default_factory=list,
                                 description="Deferred action runs cancelled because their policy stopped firing.")
    reconciled: list[str] = Field(
        default_factory=list, description="Action runs a dead process left running, retried or failed at the start "
                                          "of the tick, and flow runs set to their action run's state.")
    canaries: list[str] = Field(
        default_factory=list, description="Canary steps judged in this tick, and canaries widened, promoted or "
                                          "aborted.")
    retention: dict[str, Any] | None = Field(
        None, description="The retention pass this tick ran (knowledge.retention.RetentionReport); none: not due.")


def _identity(name: str, fn: Callable[..., T]) -> Callable[..., T]:
    return fn


class Controller:
    """Holds the stages, the loaded policies and the knowledge-base engine of one controller process.

    Parameters
    ----------
    settings : Settings
        The effective configuration.
    clock : callable, optional
        Returns the current time (aware UTC); tests and the demo step it.
    actions : ActionRegistry, optional
        Known action types; the built-ins by default. The actions of installed
        distributions (entry point group ``mape.actions``) are added to it at
        start; one that fails to load is logged and skipped
        (:attr:`action_plugin_errors`).
    migrate : bool
        Bring the knowledge base to the current schema first (the embedded default).
    flow_runs : FlowRuns, optional
        The orchestrator's flow runs of action attempts (Prefect's, when the
        flows build the controller), reconciled with the knowledge base at
        the start of every tick; none: only the knowledge base is reconciled.
    """

    def __init__(self, settings: Settings, *, clock: Clock = utcnow, actions: ActionRegistry = default_registry,
                 migrate: bool = True, engine: Engine | None = None, flow_runs: FlowRuns | None = None) -> None:
        self.settings = settings
        self.flow_runs = flow_runs
        self.clock = clock
        self.actions = actions
        self.action_plugin_errors = [str(failure) for failure in actions.load_entry_points()]
        if migrate:
            upgrade(settings.db_url)
        self.engine = engine or create_engine_for(settings.db_url, sqlite_cache_mib=settings.sqlite_cache_mib)
        self.monitor = Monitor(settings.models, serving_dir=Path(settings.serving_dir), carbon=settings.carbon,
                               prometheus=settings.prometheus)
        self.analyzer = Analyzer(settings.symptoms, stale_after=settings.stale_after)
        self.executor = Executor(self.engine, actions, models={m.name: m for m in settings.models},
                                 artifacts_dir=settings.artifacts_uri or Path(settings.artifacts_dir), actor=settings.controller_id,
                                 notifications=settings.notifications, serving_dir=Path(settings.serving_dir),
                                 energy_metering=settings.energy_metering,
                                 lease_holder=settings.controller_id if settings.leases.enabled else None)
        self.rollout = CanaryRollout(self.engine, models={m.name: m for m in settings.models},
                                     serving_dir=Path(settings.serving_dir), actor=settings.controller_id)
        self.follower = ProductionFollower(self.engine, models={m.name: m for m in settings.models},
                                           serving_dir=Path(settings.serving_dir), actor=settings.controller_id)
        self._policies_by_source: dict[str, LoadedPolicy] = {}
        self._policy_signature: tuple[Any, ...] | None = None
        self.policy_errors: list[str] = []
        self.planner = self._planner([])
        self.verifier = Verifier(actor=settings.controller_id, max_age=settings.effective_signal_max_age)
        with session_scope(self.engine) as session:
            registry.sync_models(session, settings.models, actor=settings.controller_id)
        #: With leases on, the keeper of this controller's model leases; it acts only for the models it holds.
        self.leases = LeaseKeeper(self.engine, settings) if settings.leases.enabled else None
        self.reload_policies()

    # ------------------------------------------------------------------ policies

    def _signature(self) -> tuple[Any, ...]:
        directory = Path(self.settings.policies_dir)
        if not directory.is_dir():
            return ()
        entries = []
        for path in directory.iterdir():
            if path.suffix not in (".yaml", ".yml"):
                continue
            try:
                stat = path.stat()
            except OSError:  # a dangling link (an editor's `.#name.yaml` lock) or a file removed meanwhile
                continue
            entries.append((path.name, stat.st_mtime_ns, stat.st_size))
        return tuple(sorted(entries))

    def reload_policies(self, *, force: bool = False) -> bool:
        """Reload the policy directory if any file changed; returns True if it was reloaded.

        A file that fails to load is refused (audit event, one log line); if an
        earlier version of the same file loaded, that last good version stays in
        force. The other files are unaffected.
        """
        signature = self._signature()
        if not force and signature == self._policy_signature:
            return False
        self._policy_signature = signature
        directory = Path(self.settings.policies_dir)
        if not directory.is_dir():
            log.warning("Policy directory %s does not exist; no policy is in force", directory)
            result_policies: list[LoadedPolicy] = []
            errors: list[Any] = []
        else:
            result = check_channels(load_policies(directory, known_actions=self.actions.params_models()),
                                    self.settings.notifications.channels)
            result_policies, errors = list(result.policies), list(result.errors)
        loaded = {str(p.source): p for p in result_policies}
        self.policy_errors = []
        with session_scope(self.engine) as session:
            for policy in result_policies:
                queries.record_policy_version(session, name=policy.name, text=policy.text, source=str(policy.source),
                                              author=policy.policy.metadata.owner, actor=self.settings.controller_id)
            for error in errors:
                source = str(getattr(error, "source", "") or "")
                kept = self._policies_by_source.get(source)
                if kept is not None and source not in loaded:
                    loaded[source] = kept
                    note = f"; keeping the last good version {kept.sha256[:12]}"
                else:
                    note = ""
                message = f"{error}{note}"
                self.policy_errors.append(message)
                log.error("Policy refused: %s", message)
                audit.record(session, actor=self.settings.controller_id, kind="policy.refused", subject=source,
                             payload={"error": str(error), "kept_version": kept.sha256 if kept and note else None,
                                      "line": getattr(error, "line", None), "column": getattr(error, "column", None)})
        self._policies_by_source = loaded
        self.planner = self._planner(list(loaded.values()))
        log.info("Loaded %d policies from %s (%d refused)", len(loaded), directory, len(errors))
        return True

    def _planner(self, policies: list[LoadedPolicy]) -> Planner:
        return Planner(policies, actor=self.settings.controller_id, max_age=self.settings.effective_signal_max_age,
                       blast_radius=self.settings.plan.blast_radius, utility=self.settings.plan.utility,
                       forecast=self._forecast())

    def _forecast(self) -> Callable[[str, datetime, datetime], list[tuple[datetime, float]]] | None:
        """The forecasts deferred actions are scheduled on: the carbon provider's and the price series' (if set).

        A series with nothing configured (or, for prices, an unreadable file)
        has no forecast: a policy whose ``defer.objective`` weighs it starts
        at ``earliest``, saying so in its evidence.
        """
        carbon, price = self.settings.carbon, self.settings.price
        if carbon is None and price is None:
            return None
        from mape.monitor.carbon import provider_from_config
        from mape.plan.scheduling.prices import PriceSeries

        provider = getattr(self, "_carbon_provider", None)
        if provider is None and carbon is not None:
            provider = self._carbon_provider = provider_from_config(carbon)
        prices = getattr(self, "_prices", None)
        if prices is None and price is not None:
            prices = self._prices = PriceSeries(price.path, unit=price.unit, repeat=price.repeat)

        def forecast(series: str, start: datetime, end: datetime) -> list[tuple[datetime, float]]:
            if series == "carbon" and provider is not None:
                return [(point.time, point.g_per_kwh) for point in provider.forecast(start, end)]
            if series == "price" and prices is not None:
                return prices.forecast(start, end)
            return []

        return forecast

    @property
    def policies(self) -> list[LoadedPolicy]:
        return list(self._policies_by_source.values())

    # ------------------------------------------------------------------ stages

    def _model_ids(self, session: Any) -> dict[str, int]:
        """The configured models this controller acts for, by name: all, or with leases on those it holds."""
        configured = {m.name for m in self.settings.models}
        owned = self.owned()
        return {name: m.id for name, m in queries.models_by_name(session).items()
                if name in configured and (owned is None or m.id in owned)}

    def owned(self) -> frozenset[int] | None:
        """The ids of the models whose lease this controller holds now; None with leases off (it acts for all).

        Read afresh at each stage, so a lease lost during a long tick stops
        this controller from acting for its model at the next stage (and the
        executor's claim is fenced on the lease itself).
        """
        return None if self.leases is None else self.leases.owned()

    def begin(self, at: datetime, flow_run_id: str | None = None) -> bool:
        """Record the tick; False when a tick at this ``at`` already finished (a repeated tick).

        A tick row left unfinished by a crashed process is run again: the
        analyzer and planner are idempotent per ``at``. With leases on, the
        controller first renews and takes its leases (:meth:`LeaseKeeper.round`).
        """
        if self.leases is not None:
            self.leases.round()
        with session_scope(self.engine) as session:
            tick, new = queries.begin_tick(session, at, controller_id=self.settings.controller_id,
                                           flow_run_id=flow_run_id)
            return new or tick.finished_at is None

    def reconcile(self, at: datetime) -> dict[str, Any]:
        """Settle what a dead process left, before anything is planned or started (:mod:`mape.execute.reconcile`).

        A run left ``running`` whose process is gone is retried (or failed,
        its retries spent) and its flow run marked crashed; flow runs left
        unfinished get their action run's state.
        """
        return reconcile(self.executor, at, flow_runs=self.flow_runs).as_dict()

    def sense(self, at: datetime) -> dict[str, Any]:
        with session_scope(self.engine) as session:
            mine = self._model_ids(session)
            others = set() if self.leases is None else {m.name for m in self.settings.models} - set(mine)
            report = self.monitor.run(session, mine, at, others=others)
        return _as_dict(report)

    def analyze(self, at: datetime) -> dict[str, Any]:
        with session_scope(self.engine) as session:
            report = self.analyzer.run(session, self._model_ids(session), at)
        return _as_dict(report)

    def verify(self, at: datetime) -> dict[str, Any]:
        """Judge succeeded actions against their policy's ``verify`` (:mod:`mape.plan.verification`).

        It runs before planning, so a follow-up rollback takes the model's one
        acting slot of the tick, and a policy blocked by a verdict is blocked
        from this tick on.
        """
        with session_scope(self.engine) as session:
            report = self.verifier.verify(session, at, models=self.owned())
        return _as_dict(report)

    def canary(self, at: datetime) -> dict[str, Any]:
        """Widen, promote or abort the running canaries as their steps were judged (:mod:`mape.execute.canary`),
        then move production's replicas to production where they serve another version
        (:mod:`mape.execute.production_serving`: a person's ``mape models promote|rollback``).

        It runs after verification, which judges the steps, and before
        planning, so a canary that ends frees its model in the same tick.
        """
        owned = self.owned()
        moved = self.rollout.advance(at, models=owned).as_dict()
        followed = self.follower.follow(at, models=owned).as_dict()
        return {**moved, "production_rolls": followed["production_rolls"],
                "errors": [*(moved.get("errors") or []), *followed["errors"]]}

    def plan(self, at: datetime) -> dict[str, Any]:
        self.reload_policies()
        with session_scope(self.engine) as session:
            ids = set(self._model_ids(session).values())
            models = [m for m in session.exec(select(ManagedModel)) if m.id in ids]
            report = self.planner.plan(session, models, at)
        return _as_dict(report)

    def dispatch(self, at: datetime, deferred: bool = True) -> list[int]:
        """Create runs for new decisions and return the ids of every run ready now.

        ``deferred=False`` leaves out deferred (``scheduled``) runs: the tick
        does so unless its planning ran, since only planning cancels a deferred
        run whose policy stopped firing while it waited.
        """
        owned = self.owned()
        with session_scope(self.engine) as session:
            self.executor.dispatch(session, at, models=owned)
            return self.executor.runnable(session, at, deferred=deferred, models=owned)

    def run_action(self, run_id: int, at: datetime, flow_run_id: str | None = None) -> None:
        self.executor.run(run_id, at, flow_run_id=flow_run_id)

    def notify(self, at: datetime) -> dict[str, Any]:
        """Queue the tick's notifications (:mod:`mape.notify.events`), then send every due one.

        A channel that fails is retried on a later tick and never fails this one;
        its failures come back as ``problems`` (tick warnings).
        """
        settings = self.settings.notifications
        with session_scope(self.engine) as session:
            enqueue_tick(session, settings, at, policy_channels={p.name: p.policy.spec.notify for p in self.policies},
                         models=self.owned())
        report = deliver(self.engine, settings, at, actor=self.settings.controller_id)
        return {**report.as_dict(), "problems": report.problems}

    def retain(self, at: datetime) -> dict[str, Any] | None:
        """Thin the knowledge base if a retention pass is due (:mod:`knowledge.retention`); its report, or None.

        Due at most once per ``retention.every`` among every process sharing
        the knowledge base (claimed in ``retention_state``); a pass that ran
        out of ``retention.budget`` goes on at the next tick.
        """
        config = self.settings.retention
        if not config.enabled:
            return None
        result = retention.run_if_due(self.engine, at=at, every=config.every, raw_for=config.raw_for,
                                      bucket=config.bucket, claimed_by=self.settings.controller_id,
                                      batch_rows=config.batch_rows, budget=config.budget)
        if result is None:
            return None
        if result.changed:
            with session_scope(self.engine) as session:
                audit.record(session, actor=self.settings.controller_id, kind="knowledge.retention",
                             subject="observation", payload=result.model_dump(mode="json"), time=at)
        log.info("Retention pass at %s: %d raw observations folded into %d bucket rows, %d tick reports emptied "
                 "in %.1fs.", at.isoformat(), result.raw_rows_replaced, result.bucket_rows_written,
                 result.tick_reports_pruned, result.seconds)
        return result.model_dump(mode="json")

    def finish(self, at: datetime, report: TickReport) -> TickReport:
        owned = self.owned()
        with session_scope(self.engine) as session:
            tick = session.exec(select(Tick).where(Tick.at == at,
                                                   Tick.controller_id == self.settings.controller_id)).one()
            names = {m.id: m.name for m in session.exec(select(ManagedModel))}
            report.decisions = [
                DecisionSummary(id=d.id, model=names.get(d.model_id, str(d.model_id)), policy=d.policy_name,
                                action=d.action, status=d.status, reason=d.reason)
                for d in session.exec(select(Decision).where(Decision.tick_at == at).order_by(Decision.id))
                if owned is None or d.model_id in owned
            ]
            report.actions = [
                ActionSummary(id=r.id, model=names.get(r.model_id, str(r.model_id)), action=r.action, state=r.state,
                              result=r.result, message=r.message)
                for r in session.exec(select(ActionRun).where(ActionRun.updated_at == at).order_by(ActionRun.id))
                if owned is None or r.model_id in owned
            ]
            status = "failed" if report.errors else "succeeded"
            queries.finish_tick(session, tick, status=status, summary=report.model_dump(mode="json"))
        return report

    # ------------------------------------------------------------------ the tick

    def tick(self, at: datetime | None = None, *, wrap: Wrap[Any] = _identity,
             run_action: Callable[[int, datetime], None] | None = None,
             flow_run_id: str | None = None) -> TickReport:
        """Run one iteration: monitor, analyze, plan, then dispatch and run what is due.

        ``wrap(name, fn)`` may wrap each stage (the Prefect flow makes them
        tasks); ``run_action(run_id, at)`` runs one action (the flow makes it a
        subflow). No stage's failure stops the others from being reported, and
        none escapes the tick.
        """
        at = ensure_utc(at or self.clock())
        report = TickReport(at=at)
        new = wrap("begin", self.begin)(at, flow_run_id)
        report.repeated = not new
        try:  # first, before anything is planned or started: what a dead process left
            _merge(report, "reconcile", wrap("reconcile", self.reconcile)(at))
        except Exception as exc:  # noqa: BLE001 - the runs stay as they are; a busy model is not planned for
            log.exception("Reconciliation failed at %s", at)
            report.errors.append(f"reconcile: {type(exc).__name__}: {exc}")
        planned = False
        if new:
            for name, stage in (("monitor", self.sense), ("analyze", self.analyze), ("verify", self.verify),
                                ("canary", self.canary), ("plan", self.plan)):
                try:
                    result = wrap(name, stage)(at)
                except Exception as exc:  # noqa: BLE001 - a failing stage is reported, the tick goes on
                    log.exception("Stage %s failed at %s", name, at)
                    report.errors.append(f"{name}: {type(exc).__name__}: {exc}")
                    continue
                _merge(report, name, result)
                planned = planned or name == "plan"
        try:
            ready = wrap("dispatch", self.dispatch)(at, planned)
        except Exception as exc:  # noqa: BLE001
            log.exception("Dispatch failed at %s", at)
            report.errors.append(f"dispatch: {type(exc).__name__}: {exc}")
            ready = []
        runner = run_action or self.run_action
        for run_id in ready:
            try:
                runner(run_id, at)
            except Exception as exc:  # noqa: BLE001
                log.exception("Action run %s could not be started", run_id)
                report.errors.append(f"action run {run_id}: {type(exc).__name__}: {exc}")
        try:
            report.warnings.extend(f"notify: {p}" for p in wrap("notify", self.notify)(at)["problems"])
        except Exception as exc:  # noqa: BLE001 - notifications never stop the loop
            log.exception("Notifications failed at %s", at)
            report.errors.append(f"notify: {type(exc).__name__}: {exc}")
        try:  # last: thinning the knowledge base waits for everything the tick had to do
            report.retention = wrap("retain", self.retain)(at)
        except Exception as exc:  # noqa: BLE001 - retention never fails the tick
            log.exception("The retention pass failed at %s", at)
            report.warnings.append(f"retention: {type(exc).__name__}: {exc}")
        return wrap("finish", self.finish)(at, report)

    # ------------------------------------------------------------------ people

    def request_action(self, model: str, action: str, *, params: dict[str, Any] | None = None, actor: str,
                       reason: str, at: datetime | None = None, needs_approval: bool = False,
                       approval_timeout: timedelta | None = None) -> Decision:
        """A person asks for an action outside any policy; it runs at the next dispatch, like any decision.

        With ``needs_approval`` the request waits for an approver instead (a second pair of eyes on a
        person's request, as a gated policy's decision waits): answered on the dashboard's Approvals page
        or with ``mape decisions approve|reject``, it is dispatched or closed by the next tick. Without an
        ``approval_timeout`` it waits until someone answers.
        """
        at = ensure_utc(at or self.clock())
        if action not in self.actions:
            raise KeyError(f"unknown action type {action!r}; known: {', '.join(self.actions.names())}")
        if approval_timeout is not None and approval_timeout <= timedelta(0):
            raise ValueError(f"approval_timeout must be positive, got {approval_timeout}")
        if needs_approval:
            status, decided_by, decided_at = DecisionStatus.awaiting_approval.value, None, None
            expires_at = at + approval_timeout if approval_timeout is not None else None
        else:
            status, decided_by, decided_at, expires_at = DecisionStatus.approved.value, actor, at, None
        with session_scope(self.engine) as session:
            row = registry.get_model(session, model)
            decision = Decision(
                created_at=at, tick_at=None, model_id=row.id, policy_name="manual", action=action,
                params=dict(params or {}), evidence={"requested_by": actor, "reason": reason},
                status=status, reason=reason, actor=actor, decided_by=decided_by, decided_at=decided_at,
                expires_at=expires_at, dedup_key=f"{model}/manual/{actor}/{at.isoformat()}/{action}",
            )
            decision, _ = queries.add_decision(session, decision)
            audit.record(session, actor=actor, kind="decision.requested", subject=str(decision),
                         payload={"params": decision.params, "reason": reason, "needs_approval": needs_approval},
                         time=at)
            return decision


def _as_dict(report: Any) -> dict[str, Any]:
    """Every stage report offers ``as_dict()``: plain JSON values for the tick report."""
    return report.as_dict()


def _merge(report: TickReport, stage: str, result: dict[str, Any]) -> None:
    """Fold a stage's report into the tick report (the stages' reports are plain dicts here)."""
    if stage == "monitor":
        report.signals = dict(result.get("models") or result.get("summaries") or {})
        report.errors.extend(f"monitor: {e}" for e in result.get("errors") or [])
    elif stage == "analyze":
        report.opened = [str(s) for s in result.get("opened") or []]
        report.closed = [str(s) for s in result.get("closed") or []]
        report.errors.extend(f"analyze: {e}" for e in result.get("errors") or [])
    elif stage == "verify":
        report.verdicts = [VerdictRecord(**v) for v in result.get("verdicts") or []]
        report.warnings.extend(f"verify: {e}" for e in result.get("errors") or [])
        report.canaries.extend(result.get("canary_steps") or [])
    elif stage == "canary":
        report.canaries.extend(result.get("moves") or [])
        report.errors.extend(f"canary: {e}" for e in result.get("errors") or [])
    elif stage == "reconcile":
        report.reconciled = list(result.get("reconciled") or [])
        report.warnings.extend(f"reconcile: {e}" for e in result.get("errors") or [])
    elif stage == "plan":
        report.warnings.extend(f"plan: {e}" for e in result.get("errors") or [])
        report.pending = {model: list(names) for model, names in (result.get("pending") or {}).items()}
        report.expired = list(result.get("expired") or [])
        report.cancelled = list(result.get("cancelled") or [])
