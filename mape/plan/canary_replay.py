"""What ``mape policy simulate`` knows of canaries: recorded ones keep their models busy; planned ones are described.

Who calls it: :mod:`mape.plan.simulate`.

Two things, both plain:

* :class:`CanaryHistory`: while a recorded canary ran, the live planner
  suppressed every decision for its model as ``busy`` (the ledger's
  :class:`~mape.plan.ledger.CanaryInFlight`, naming the step it was at), so
  the replay does too, at the same ticks and with the same reason. A canary
  holds its model from the tick after the one whose run started it (the run
  is dispatched after planning) until the tick whose canary stage ended it
  (that stage runs before planning); its step at a tick is the newest step
  started at or before it.
* :func:`canary_plans`: what a candidate policy's ``retrain`` with ``canary``
  would do after its gate: the steps, in words. They are not replayed. Each
  step is judged by the policy's ``verify`` on the candidate's own
  predictions (the Monitor's ``canary.*`` observations of its version), and
  a simulated retrain trains no candidate, so no such predictions exist to
  judge; nor is the loop's feedback simulated (a simulated retrain makes no
  run, no version, and no canary that would keep its model busy).

>>> plans = canary_plans_from({"retrain-canary": {"steps": [0.1, {"share": 0.5, "bake": "2h"}], "bake": "1h"}})
>>> print(plans["retrain-canary"])
10% of the replicas for 1h, then 50% of the replicas for 2h, then production
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from knowledge.tables import ActionRun, Canary
from mape._util.timeutil import ensure_utc, format_duration
from mape.plan.ledger import CanaryInFlight
from mape.plan.loader import LoadedPolicy

__all__ = ["NOT_REPLAYED", "CanaryHistory", "CanaryPlan", "canary_plans", "canary_plans_from"]

#: Why a planned canary's steps are not replayed (the simulation's summary says it).
NOT_REPLAYED = ("not replayed: each step is judged by the policy's verify on the candidate's own predictions "
                "(canary.* observations), which only a candidate serving live traffic makes")


@dataclass(frozen=True)
class CanaryPlan:
    """The steps a policy's canary would take: shares of the replicas and their bake times."""

    policy: str
    steps: tuple[tuple[float, str], ...]

    def __str__(self) -> str:
        walk = ", then ".join(f"{share:.0%} of the replicas for {bake}" for share, bake in self.steps)
        return f"{walk}, then production"

    def as_dict(self) -> dict[str, Any]:
        return {"steps": [{"share": share, "bake": bake} for share, bake in self.steps], "plan": str(self)}


def canary_plans(policies: Sequence[LoadedPolicy]) -> dict[str, CanaryPlan]:
    """By policy name, the canary of each policy whose action is a ``retrain`` with ``canary``."""
    return canary_plans_from({p.name: p.policy.spec.action.params.get("canary") for p in policies
                              if p.action == "retrain" and isinstance(p.policy.spec.action.params, dict)})


def canary_plans_from(params: Mapping[str, Any]) -> dict[str, CanaryPlan]:
    """The canary plans of ``canary`` parameters (as policies give them, checked at load) by policy name."""
    plans: dict[str, CanaryPlan] = {}
    for name, canary in params.items():
        if not isinstance(canary, dict):
            continue
        default = canary.get("bake")
        steps = []
        for step in canary.get("steps") or []:
            share, bake = (step.get("share"), step.get("bake") or default) if isinstance(step, dict) else (step, default)
            if isinstance(share, (int, float)):
                steps.append((float(share), format_duration(bake) if isinstance(bake, timedelta) else str(bake)))
        if steps:
            plans[name] = CanaryPlan(name, tuple(steps))
    return plans


@dataclass(frozen=True)
class _CanaryAt:
    """A canary as the busy rule names it at one tick (the fields :class:`CanaryInFlight` reads)."""

    id: int | None
    step: int
    steps: list[Any]
    share: float


class _Recorded:
    """One recorded canary: when it held its model, and when each of its steps started."""

    __slots__ = ("canary_id", "run", "steps", "created", "finished", "starts", "shares")

    def __init__(self, canary: Canary, run: ActionRun) -> None:
        self.canary_id, self.run, self.steps = canary.id, run, list(canary.steps)
        self.created = ensure_utc(canary.created_at)
        self.finished = ensure_utc(canary.finished_at) if canary.finished_at is not None else None
        started: dict[int, tuple[datetime, float]] = {}
        for entry in canary.history or []:
            if isinstance(entry, dict) and "step" in entry and "started_at" in entry:
                started[int(entry["step"]) - 1] = (ensure_utc(datetime.fromisoformat(entry["started_at"])),
                                                   float(entry.get("share", 0.0)))
        started.setdefault(canary.step, (ensure_utc(canary.step_started_at), canary.share))
        ordered = sorted((at, index, share) for index, (at, share) in started.items())
        self.starts = [at for at, _, _ in ordered]
        self.shares = [(index, share) for _, index, share in ordered]

    def at(self, when: datetime) -> CanaryInFlight | None:
        if not self.created < when or (self.finished is not None and when >= self.finished):
            return None
        position = max(bisect.bisect_right(self.starts, when) - 1, 0)
        index, share = self.shares[position]
        return CanaryInFlight(_CanaryAt(self.canary_id, index, self.steps, share), self.run)  # type: ignore[arg-type]


class CanaryHistory:
    """The recorded canaries of the replayed models: the ones in flight while each tick was planned."""

    def __init__(self, rows: Iterable[tuple[Canary, ActionRun]]) -> None:
        self._by_model: dict[int, list[_Recorded]] = {}
        for canary, run in rows:
            self._by_model.setdefault(canary.model_id, []).append(_Recorded(canary, run))

    @property
    def model_ids(self) -> list[int]:
        return list(self._by_model)

    def busy_at(self, model_id: int, at: datetime) -> list[CanaryInFlight]:
        """The model's canaries in flight while the tick at ``at`` was planned, as the busy rule names them."""
        return [found for recorded in self._by_model.get(model_id, ()) if (found := recorded.at(at)) is not None]
