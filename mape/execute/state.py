"""The action run state machine: which state may follow which.

Who calls it: the executor, for every change of an action run's state, so an
illegal move (running a cancelled run, finishing a run twice) is an error and
not a silent corruption of the progress record.

>>> allowed("pending", "running"), allowed("succeeded", "running")
(True, False)
"""

from __future__ import annotations

from datetime import datetime

from knowledge.tables import ActionRun, ActionState
from mape.errors import IllegalTransitionError

S = ActionState
TRANSITIONS: dict[str, frozenset[str]] = {
    S.pending.value: frozenset({S.scheduled.value, S.running.value, S.cancelled.value, S.failed.value}),
    S.scheduled.value: frozenset({S.pending.value, S.running.value, S.cancelled.value}),
    S.running.value: frozenset({S.succeeded.value, S.failed.value, S.pending.value, S.timed_out.value}),
    S.succeeded.value: frozenset(),
    S.failed.value: frozenset(),
    S.cancelled.value: frozenset(),
    S.timed_out.value: frozenset(),
}
TERMINAL = frozenset(s for s, nxt in TRANSITIONS.items() if not nxt)


def allowed(current: str, new: str) -> bool:
    return new in TRANSITIONS.get(current, frozenset())


def transition(run: ActionRun, new: str, *, at: datetime, message: str | None = None) -> ActionRun:
    """Move ``run`` to ``new`` (in memory; the caller flushes), stamping start and finish times."""
    if not allowed(run.state, new):
        raise IllegalTransitionError(f"{run} cannot go from {run.state} to {new}")
    run.state = new
    run.updated_at = at
    if new == S.running.value:
        run.started_at = at
    if new in TERMINAL:
        run.finished_at = at
    if message is not None:
        run.message = message
    return run
