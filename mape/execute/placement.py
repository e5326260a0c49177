"""Put a number of replicas of one version on a serving target, and take them off again.

Who calls it: the canary's start (:mod:`mape.execute.canary.begin`) and its
steps (:mod:`mape.execute.canary.rollout`), and what moves production's
replicas to a new production version (:mod:`mape.execute.production_serving`).
The calls are idempotent: the count is absolute, and a target that can replace replicas of another version
(the local replica set's :meth:`~mape.serving.local.LocalReplicaSet.roll`)
does so, so a canary's replicas all serve its candidate even when an earlier,
failed attempt left replicas of another candidate behind. A Kubernetes
Deployment's pods run what its pod template names: with
``serving.kubernetes.promote: patch`` rolling it sets the version on the pod
template (before the Deployment is scaled up, so no pod of another version
starts); with ``pipeline`` only the count is ours.
"""

from __future__ import annotations

from mape.serving.target import ServingTarget

__all__ = ["place", "roll", "withdraw"]


def place(target: ServingTarget, replicas: int) -> int:
    """Scale ``target`` to ``replicas`` serving the version its artifact names; returns how many run.

    The replicas of another version are replaced first, then the count is
    set: new replicas start with the right version.
    """
    roll(target)
    return target.scale(replicas)


def roll(target: ServingTarget) -> int:
    """Replace the target's replicas that serve another version than its artifact names; returns how many.

    Local replica sets start new replicas before stopping old ones; a
    Kubernetes Deployment gets the version on its pod template
    (``promote: patch``; with ``pipeline``, nothing changes).
    """
    replace = getattr(target, "roll", None)
    return int(replace()) if callable(replace) else 0


def withdraw(target: ServingTarget) -> None:
    """Stop every replica of ``target``."""
    target.scale(0)
