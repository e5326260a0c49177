"""``spec.for`` and ``spec.keep_firing_for``: when a policy whose condition holds actually fires.

What it does: :func:`advance` moves one policy's state for one model
(:class:`knowledge.tables.PolicyState`: inactive → pending → firing → kept
firing → inactive) by one evaluation, with the semantics of a Prometheus
alerting rule's ``for`` and ``keep_firing_for``:

- the condition holds (``when`` true, ``unless`` false): the active period
  starts at the first such evaluation (``pending_since``); the policy fires
  once ``at - pending_since >= for`` (``for: 0`` fires at once);
- the condition does not hold: a firing policy keeps firing while
  ``at - last_true_at <= keep_firing_for`` (the last evaluation on which the
  condition held); otherwise the state resets, so one false evaluation ends a
  pending period, and ``for`` counts again from the next true one;
- the condition cannot be evaluated (a missing signal): the state resets at
  once, ``keep_firing_for`` included. Missing data never counts toward ``for``
  and never keeps a policy firing;
- an evaluation at or before the last one (a replayed tick) changes nothing
  and answers as the last one did, so a repeated ``at`` never advances state.

The state row is the progress record: it lives in the knowledge base, so a
restarted controller resumes a pending period where the last one left it.

Who calls it: :class:`mape.plan.planner.Planner`, for policies with a ``for``
or ``keep_firing_for`` above zero (the others need no state); tests.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from knowledge.tables import PolicyState
from mape._util.timeutil import ensure_utc

__all__ = ["advance", "is_replay", "tracks_state"]


def tracks_state(for_: timedelta, keep_firing_for: timedelta) -> bool:
    """Whether a policy needs a state row: only when one of its two durations is above zero."""
    return for_ > timedelta(0) or keep_firing_for > timedelta(0)


def is_replay(state: PolicyState | None, at: datetime) -> bool:
    """Whether ``at`` is at or before the state's last evaluation (nothing may change)."""
    return state is not None and ensure_utc(at) <= ensure_utc(state.updated_at)


def advance(state: PolicyState, at: datetime, holds: bool | None, *, for_: timedelta,
            keep_firing_for: timedelta) -> bool:
    """Apply the evaluation at ``at`` to ``state`` (in place) and return whether the policy fires.

    Parameters
    ----------
    state : PolicyState
        The stored row, or a new one (``updated_at`` before ``at``).
    at : datetime
        The tick's logical time.
    holds : bool or None
        Whether the condition held; ``None`` when it could not be evaluated.
    for_ : timedelta
        ``spec.for``.
    keep_firing_for : timedelta
        ``spec.keep_firing_for``.

    Returns
    -------
    bool
        Whether the policy fires at ``at``. On a replayed ``at``, the stored
        answer of the last evaluation, and ``state`` is left unchanged.

    Examples
    --------
    >>> from datetime import datetime, timedelta, timezone
    >>> t0 = datetime(2026, 1, 5, tzinfo=timezone.utc)
    >>> state = PolicyState(model_id=1, policy_name="p", updated_at=t0 - timedelta(hours=1))
    >>> [advance(state, t0 + timedelta(hours=h), True, for_=timedelta(hours=2), keep_firing_for=timedelta(0))
    ...  for h in range(4)]
    [False, False, True, True]
    >>> advance(state, t0 + timedelta(hours=4), False, for_=timedelta(hours=2), keep_firing_for=timedelta(0))
    False
    """
    at = ensure_utc(at)
    if is_replay(state, at):
        return state.firing_since is not None
    state.updated_at = at
    if holds is True:
        if state.pending_since is None:
            state.pending_since = at
        state.last_true_at = at
        if state.firing_since is None and at - ensure_utc(state.pending_since) >= for_:
            state.firing_since = at
        return state.firing_since is not None
    if (holds is False and state.firing_since is not None and state.last_true_at is not None
            and at - ensure_utc(state.last_true_at) <= keep_firing_for):
        return True  # kept firing: the active period (pending_since, firing_since) goes on
    state.pending_since = None
    state.firing_since = None
    return False
