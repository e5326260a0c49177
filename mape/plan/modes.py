"""The policies as the planner plans them: each in the mode a person set in the knowledge base, if any.

What it does: :func:`in_effect` returns the policy set with every overridden
policy (:class:`knowledge.tables.PolicyModeOverride`, set by an admin with
``mape policy mode`` or on the dashboard) replaced by a copy whose
``spec.mode`` is the override's, so the rest of the planner (``off``
policies are not selected, ``dry-run`` decisions are recorded and not
acted on: :mod:`mape.plan.rules`) needs no second notion of mode. The copy
keeps the file's text and sha256: decisions still name the file version
that made them, and their evidence names the override.

Who calls it: :meth:`mape.plan.planner.Planner.plan`, once per pass, with
:func:`knowledge.policy_modes.overrides`. ``mape policy simulate`` does not:
it replays the candidate files as written.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace

from mape.plan.loader import LoadedPolicy


def with_mode(policy: LoadedPolicy, mode: str) -> LoadedPolicy:
    """``policy`` planned in ``mode`` (the same object when that is already its mode)."""
    spec = policy.policy.spec
    if spec.mode == mode:
        return policy
    document = policy.policy.model_copy(update={"spec": spec.model_copy(update={"mode": mode})})
    return replace(policy, policy=document)


def in_effect(policies: Sequence[LoadedPolicy], modes: Mapping[str, str]) -> tuple[LoadedPolicy, ...]:
    """``policies`` with every one named in ``modes`` (policy name to mode) in that mode, in the same order."""
    return tuple(with_mode(p, modes[p.name]) if p.name in modes else p for p in policies)
