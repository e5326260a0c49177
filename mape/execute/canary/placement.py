"""Put a number of replicas of one version on a serving target, and take them off again.

Who calls it: the canary's start (:mod:`mape.execute.canary.begin`) and its
steps (:mod:`mape.execute.canary.rollout`). Both calls are idempotent: the
count is absolute, and a target that can replace replicas of another version
(the local replica set's :meth:`~mape.serving.local.LocalReplicaSet.roll`)
does so, so a canary's replicas all serve its candidate even when an earlier,
failed attempt left replicas of another candidate behind. A Kubernetes
Deployment's pods run what its pod template names; only their count is ours.
"""

from __future__ import annotations

from mape.serving.target import ServingTarget

__all__ = ["place", "roll", "withdraw"]


def place(target: ServingTarget, replicas: int) -> int:
    """Scale ``target`` to ``replicas`` serving the version its artifact names; returns how many run."""
    running = target.scale(replicas)
    roll(target)
    return running


def roll(target: ServingTarget) -> int:
    """Replace the target's replicas that serve another version than its artifact names (none on Kubernetes)."""
    replace = getattr(target, "roll", None)
    return int(replace()) if callable(replace) else 0


def withdraw(target: ServingTarget) -> None:
    """Stop every replica of ``target``."""
    target.scale(0)
