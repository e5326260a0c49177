"""Withdraw canary replicas that no running canary owns: those a retrain's lost attempt started.

Who calls it: the executor, when a run that asked for a canary ends for good
(failed, timed out, or succeeded without a running canary: a retry whose
candidate the gate rejected), for that run's model; and reconciliation
(:mod:`mape.execute.reconcile`) at the start of every tick, for every model,
so what a controller killed in between left is withdrawn by the next one.

Why there are any: a ``retrain`` attempt starts its canary's replicas
(:mod:`mape.execute.canary.begin`) before its transaction commits. An attempt
that is lost after that (its process killed, its commit failed) leaves them
running with no :class:`~knowledge.tables.Canary` row. A retry replaces them
with its own; a run that never gets there must withdraw them.

The rule, for a model's newest run that asked for a canary
(:func:`knowledge.canaries.latest_canary_runs`): once that run is final and
its model has no running canary and no run in flight, its model's canary
target (the local ``canary`` replica set, or the ``<deployment>-canary``
Deployment) is scaled to 0 if it runs any replica. A canary that ended but
could not remove its replicas (its message says so) is swept the same way.
Each run is checked once: the check is recorded on the run's result
(``canary_replicas``: when, how many were withdrawn, from which target), and
a withdrawal in the audit trail (``canary.orphans_withdrawn``). A transient
serving failure leaves the run unmarked, to be checked again at the next
reconciliation; a permanent one (a missing Deployment, a refused token) is
recorded (``canary.orphans_not_withdrawn``) and not retried.
"""

from __future__ import annotations

import logging
from collections.abc import Collection
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy.engine import Engine

from knowledge import audit, queries
from knowledge.canaries import latest_canary_runs, running_canaries
from knowledge.database import session_scope
from knowledge.tables import ActionRun, ActionState, Canary, CanaryState
from mape.config import ModelConfig
from mape.errors import CanaryNotSupportedError, ServingError
from mape.execute.placement import withdraw
from mape.serving.factory import canary_target_for

__all__ = ["FINAL_RUN_STATES", "MARKER", "WITHDRAW_FAILED", "OrphanReport", "asked_for_canary", "withdraw_orphans"]

log = logging.getLogger(__name__)

#: Run states after which a run starts nothing more.
FINAL_RUN_STATES = frozenset({ActionState.succeeded.value, ActionState.failed.value, ActionState.timed_out.value,
                              ActionState.cancelled.value})
#: The key of a run's result that records the check of its canary replicas.
MARKER = "canary_replicas"
#: What an ended canary's message says when its replicas could not be removed (:mod:`~mape.execute.canary.rollout`).
WITHDRAW_FAILED = "its replicas could not be removed"


@dataclass
class OrphanReport:
    """What one :func:`withdraw_orphans` pass did: the withdrawals, as sentences, and the failures."""

    withdrawn: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"withdrawn": list(self.withdrawn), "errors": list(self.errors)}


def asked_for_canary(run: ActionRun) -> bool:
    """Whether a run's parameters ask for a canary (a ``retrain`` with ``canary``)."""
    return isinstance(run.params, dict) and run.params.get("canary") is not None


def withdraw_orphans(engine: Engine, models: dict[str, ModelConfig], serving_dir: Path, at: datetime, *,
                     actor: str, model_ids: Collection[int] | None = None) -> OrphanReport:
    """Scale to 0 the canary replicas of every model (of ``model_ids``) that no running canary owns; see the module."""
    report = OrphanReport()
    with session_scope(engine) as session:
        busy = {canary.model_id for canary, _, _ in running_canaries(session)}
        busy |= {run.model_id for run in queries.running_actions(session)}
        suspects = [(run.id, model.name) for run, model, canary in
                    latest_canary_runs(session, list(model_ids) if model_ids is not None else None)
                    if run.model_id not in busy and _unchecked(run, canary)]
    for run_id, name in suspects:
        assert run_id is not None
        cfg = models.get(name)
        if cfg is None:
            continue  # not configured here: its serving target is unknown, and another controller may own it
        found = _withdraw(cfg, serving_dir)
        if found.get("transient"):
            report.errors.append(f"canary replicas of model {name} (action run {run_id}): {found['error']}")
            continue
        with session_scope(engine) as session:
            run = session.get(ActionRun, run_id)
            if run is None or MARKER in (run.result or {}):
                continue  # another controller checked it meanwhile
            found.pop("transient", None)
            run.result = {**(run.result or {}), MARKER: {"checked_at": at.isoformat(), **found}}
            session.add(run)
            if found["withdrawn"]:
                sentence = (f"{found['withdrawn']} canary replica(s) of model {name} withdrawn from {found['target']}: "
                            f"no running canary owns them (action run {run_id} is {run.state})")
                audit.record(session, actor=actor, kind="canary.orphans_withdrawn", subject=str(run), time=at,
                             payload={"model": name, "run": run_id, "run_state": run.state, **found})
                report.withdrawn.append(sentence)
                log.warning("%s", sentence)
            elif found.get("error"):
                audit.record(session, actor=actor, kind="canary.orphans_not_withdrawn", subject=str(run), time=at,
                             payload={"model": name, "run": run_id, "run_state": run.state, **found})
                report.errors.append(f"canary replicas of model {name} (action run {run_id}) cannot be checked: "
                                     f"{found['error']}")
                log.error("Canary replicas of model %s (action run %s) cannot be checked, and are not tried again: %s",
                          name, run_id, found["error"])
    return report


def _unchecked(run: ActionRun, canary: Canary | None) -> bool:
    """Whether a model's newest canary run may have left replicas that nothing withdrew yet."""
    if run.state not in FINAL_RUN_STATES or MARKER in (run.result or {}):
        return False
    if canary is None:
        return True  # a lost attempt may have started them: nothing recorded says either way
    return canary.state != CanaryState.running.value and WITHDRAW_FAILED in (canary.message or "")


def _withdraw(cfg: ModelConfig, serving_dir: Path) -> dict[str, Any]:
    """Scale the model's canary target to 0 if it runs replicas; what was found (``error`` if it failed)."""
    if cfg.serving is None:
        return {"target": None, "withdrawn": 0, "error": None, "transient": False}

    def no_version() -> tuple[int, str]:
        raise ServingError("only withdraws orphan canary replicas here; it starts none", model=cfg.name)

    target = canary_target_for(cfg, serving_dir, no_version)
    try:
        running = target.replicas()
        if running:
            withdraw(target)
    except (ServingError, CanaryNotSupportedError) as exc:
        transient = isinstance(exc, ServingError) and exc.transient
        return {"target": str(target), "withdrawn": 0, "error": str(exc), "transient": transient}
    return {"target": str(target), "withdrawn": running, "error": None, "transient": False}
