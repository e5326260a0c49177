"""A dry run of an edited policy: check its text, then replay the last days through the live set with it in place.

Who calls it: the dashboard's Policies page, for anyone signed in (it
changes nothing). :func:`check_edited` validates the text as the controller
would load it (the same loader, actions and channels), naming the field of
every problem. :func:`dry_run` replays the recorded ticks of the last
``days`` days with :func:`mape.plan.simulate.simulate`, the engine of
``mape policy simulate``, over the live set with the edited policy in place
of the one of the same name (or added, if the name is new). The simulator
only reads the knowledge base, and the files on disk are never touched.

A replay is bounded: at most :data:`MAX_DAYS` days, refused up front when
the ticks times the models exceed :data:`MAX_MODEL_TICKS`, and stopped when
it runs past its time budget, each with a message saying what to do
instead (``mape policy simulate`` has no such bounds).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy.engine import Engine

from dashboard.policy_files import known_actions
from knowledge import queries
from knowledge.database import session_scope
from knowledge.tables import ManagedModel
from mape.config import Settings
from mape.errors import MapeError, PolicyError
from mape.plan.channels import channel_errors
from mape.plan.ledger import ACTING_STATUSES
from mape.plan.loader import LoadedPolicy, check_policy_text
from mape.plan.simulate import SimulatedTick, SimulationSummary, simulate

#: The longest replay the page runs.
MAX_DAYS = 30
#: Model-ticks (recorded ticks times models) past which a replay is refused up front.
MAX_MODEL_TICKS = 200_000
#: Seconds a replay may run before it is stopped.
TIME_BUDGET_S = 60.0


class DryRunRefused(MapeError):
    """The dry run cannot be run as asked; the message says why and what to do instead."""


@dataclass
class DryRun:
    """What the live set with the edited policy would have decided.

    ``outcomes``: by ``(model, action, status)``, the edited policy's simulated
    and live decisions; ``buckets``: by (start of the hour or day, status), its
    simulated decisions, for a chart.
    """

    policy: str
    replaced: bool
    summary: SimulationSummary
    bucket: str
    outcomes: dict[tuple[str, str, str], Counter[str]] = field(default_factory=dict)
    buckets: Counter[tuple[datetime, str]] = field(default_factory=Counter)

    def acting(self, which: str) -> int:
        """The edited policy's acting decisions (proposed, awaiting approval, approved), ``simulated`` or ``live``."""
        return sum(c[which] for (_, _, status), c in self.outcomes.items() if status in ACTING_STATUSES)


def check_edited(text: str, source: str, settings: Settings) -> tuple[LoadedPolicy | None, list[PolicyError]]:
    """The edited policy, or every problem of its text (each naming ``source``, line, column and field)."""
    loaded, errors = check_policy_text(text, source, known_actions=known_actions())
    if loaded is not None:
        errors = channel_errors(loaded, settings.notifications.channels)
    return (loaded, []) if loaded is not None and not errors else (None, errors)


def _models(engine: Engine, settings: Settings) -> list[ManagedModel]:
    """The models the controller plans: the configured ones that are stored, else every stored one."""
    with session_scope(engine) as session:
        stored = queries.models_by_name(session)
    configured = [m.name for m in settings.models]
    return [stored[n] for n in configured if n in stored] if configured else \
        sorted(stored.values(), key=lambda m: m.id or 0)


def dry_run(engine: Engine, settings: Settings, live: Sequence[LoadedPolicy], edited: LoadedPolicy, *, days: int,
            now: datetime, budget_s: float = TIME_BUDGET_S) -> DryRun:
    """Replay the last ``days`` days through ``live`` with ``edited`` in place; nothing is written.

    Raises
    ------
    DryRunRefused
        ``days`` is out of range, the replay is too large, or it ran past ``budget_s``.
    SimulationError
        No recorded tick in the range, or no model (the message says which).
    """
    if not isinstance(days, int) or not 1 <= days <= MAX_DAYS:
        raise DryRunRefused(f"The 'days' parameter of dry_run must be an int in [1, {MAX_DAYS}]. Got {days!r} instead.")
    start = now - timedelta(days=days)
    models = _models(engine, settings)
    with session_scope(engine) as session:
        ticks = len(queries.tick_times(session, since=start, until=now))
    if ticks * len(models) > MAX_MODEL_TICKS:
        raise DryRunRefused(
            f"{ticks} recorded ticks of {len(models)} models in the last {days} days is more than the dashboard "
            f"replays ({MAX_MODEL_TICKS:,} model-ticks): pick fewer days, or run `mape policy simulate --since "
            f"{days}d --policies DIR` with the edited file in a copy of the policy directory")
    replaced = any(p.name == edited.name for p in live)
    candidates = [edited if p.name == edited.name else p for p in live] + ([] if replaced else [edited])
    result = DryRun(policy=edited.name, replaced=replaced, summary=SimulationSummary(start=start, end=now),
                    bucket="hour" if days <= 3 else "day")
    began = time.perf_counter()

    def count(tick: SimulatedTick) -> None:
        if time.perf_counter() - began > budget_s:
            raise DryRunRefused(f"the replay ran past {budget_s:.0f} s at {tick.at.isoformat()}, and was stopped: "
                                f"pick fewer days, or run `mape policy simulate --since {days}d` at the command line")
        at = tick.at.replace(minute=0, second=0, microsecond=0)
        if result.bucket == "day":
            at = at.replace(hour=0)
        for which, outcomes in (("simulated", tick.simulated), ("live", tick.live)):
            for o in outcomes:
                if o.policy != edited.name:
                    continue
                result.outcomes.setdefault((o.model, o.action, o.status), Counter())[which] += 1
                if which == "simulated":
                    result.buckets[(at, o.status)] += 1

    report = simulate(engine, candidates, start=start, end=now, models=models,
                      max_age=settings.effective_signal_max_age, blast_radius=settings.plan.blast_radius,
                      utility=settings.plan.utility, workers=1, keep="none", on_tick=count)
    result.summary = report.summary
    return result
